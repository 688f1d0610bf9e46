"""The base model's own answers to plain prompts: anchor rows for chat without documents.

Run 3 of the default recipe kept RAG answers (KL to the base on RAG prompts) and still broke plain
chat ("Write one sentence about dogs." -> "A wagging tail wagging tail ..."): no loss looked at a
conversation without documents. No chat set in the shared data may be trained on, so the rows are
made the way self-distillation makes them: the untrained model answers each prompt greedily,
exactly as `EgtLM.chat` would, and the anchor loss keeps the trained model's next-token
distribution on that conversation equal to the base's. Answers are generated in left-padded
batches (`transformers`' `generate`) and cached beside the run, so a resumed run does not
regenerate them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..generation.chat import chat_input_ids, generation_config
from .data import ChatRow, PromptRow

logger = logging.getLogger(__name__)
SELF_ANSWER_MAX_NEW_TOKENS = 64


def greedy_answers(
    lm: Any,
    conversations: Sequence[Sequence[dict[str, str]]],
    max_new_tokens: int = SELF_ANSWER_MAX_NEW_TOKENS,
    batch_size: int = 16,
) -> list[str]:
    """`lm.chat(c, max_new_tokens).text` for each conversation, batched (same prompt, greedy)."""
    tokenizer, model = lm.tokenizer, lm.model
    prompts = [chat_input_ids(tokenizer, [dict(m) for m in c]) for c in conversations]
    config = generation_config(tokenizer, model, max_new_tokens, 0.0, 1.0)
    eos = set(config.eos_token_id)
    answers = [""] * len(prompts)
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))  # similar lengths pad less
    training = model.training
    model.eval()
    try:
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            longest = max(len(prompts[i]) for i in rows)
            pad = [longest - len(prompts[i]) for i in rows]
            ids = torch.tensor(
                [[config.pad_token_id] * p + prompts[i] for p, i in zip(pad, rows, strict=True)]
            )
            mask = torch.tensor([[0] * p + [1] * (longest - p) for p in pad])
            with torch.inference_mode():
                out = model.generate(
                    input_ids=ids.to(model.device),
                    attention_mask=mask.to(model.device),
                    generation_config=config,
                )
            for i, generated in zip(rows, out[:, longest:].tolist(), strict=True):
                kept = []
                for token in generated:
                    if token in eos:
                        break
                    kept.append(token)
                answers[i] = tokenizer.decode(kept, skip_special_tokens=True)
    finally:
        model.train(training)
    return answers


def answer_prompts(lm: Any, rows: Sequence[PromptRow], cache: Path | None = None) -> list[ChatRow]:
    """Each prompt with the model's greedy answer appended; answers already in `cache` (a JSON lines
    file of conversations, written as they are made) are read back, an unreadable one recomputed."""
    known: dict[str, ChatRow] = {}
    if cache is not None and cache.is_file():
        for line in cache.read_text(encoding="utf-8").splitlines():
            try:
                messages = tuple(json.loads(line)["messages"])
                known[_key(messages[:-1])] = ChatRow(messages)
            except (ValueError, KeyError, TypeError, IndexError):
                logger.warning("%s: an unreadable cached answer is made again.", cache)
    missing = [r for r in rows if _key(r.messages) not in known]
    if missing:
        logger.info(
            "answering %d prompts with the base model (%d cached)", len(missing), len(rows) - len(missing)
        )
        texts = greedy_answers(lm, [r.messages for r in missing])
        made = [
            ChatRow((*r.messages, {"role": "assistant", "content": t}))
            for r, t in zip(missing, texts, strict=True)
        ]
        for row in made:
            known[_key(row.messages[:-1])] = row
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            with cache.open("a", encoding="utf-8") as f:
                f.writelines(
                    json.dumps({"messages": list(r.messages)}, ensure_ascii=False) + "\n" for r in made
                )
    return [known[_key(r.messages)] for r in rows]


def _key(messages: Sequence[dict[str, str]]) -> str:
    return json.dumps([[m["role"], m["content"]] for m in messages], ensure_ascii=False)
