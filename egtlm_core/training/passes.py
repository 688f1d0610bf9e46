"""Forward passes of one training step, built from the same code inference runs.

Embedding passes tokenize, mask and pool exactly as `EgtLM.encode` (via `EgtLM.embedding_inputs` and
`EmbeddingPass.vectors`); generative passes are causal; RAG samples are laid out exactly as the
segment plan lays a reuse prompt out (`rag_layout`), and the student sees them under the block mask
that reuse produces: each document attends to the prefix and itself, live tokens to everything.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ..embedding.prompts import format_instruction
from ..model import EgtLM
from ..rag.segment_plan import SegmentPlan, rag_layout
from .data import DOCUMENT, QUERY, ChatRow, RAGRow, Text
from .losses import IGNORE

_DOCUMENT_CONTEXT = None  # the group of plain documents under document_context="rag"


def _instruction(lm: EgtLM, text: Text, side: str) -> tuple[str | None, str]:
    """(finished instruction prefix, text) for one training text on one side; the prefix is None
    for a plain document under `document_context="rag"` (embedded after the RAG prompt head)."""
    c = lm.config
    if isinstance(text, tuple):
        task, body = text
    elif side == QUERY:
        task, body = c.query_instruction, text
    elif c.document_context == "rag":
        return _DOCUMENT_CONTEXT, text
    else:
        task, body = c.document_instruction, text
    return format_instruction(task, c.prompt_format, c.prompt_template), body


def embed(lm: EgtLM, texts: Sequence[Text], side: str = DOCUMENT, max_length: int = 256) -> torch.Tensor:
    """[n, d] vectors with autograd, texts grouped by instruction (one forward per instruction);
    documents tokenized as `encode_documents` tokenizes them (`EgtLM.document_inputs`)."""
    pass_ = lm.embedding_pass()
    prepared = [_instruction(lm, t, side) for t in texts]
    out: list[torch.Tensor | None] = [None] * len(texts)
    for instruction in dict.fromkeys(p[0] for p in prepared):
        rows = [i for i, p in enumerate(prepared) if p[0] == instruction]
        group = [prepared[i][1] for i in rows]
        items = (
            lm.document_inputs(group, max_length)
            if instruction is _DOCUMENT_CONTEXT
            else lm.embedding_inputs(group, instruction, max_length)
        )
        for i, vector in zip(rows, pass_.vectors(items), strict=True):
            out[i] = vector
    return torch.stack(out)  # type: ignore[arg-type]


def _template_ids(
    tokenizer: Any, messages: Sequence[dict[str, str]], add_generation_prompt: bool = False
) -> list[int]:
    """Token ids of the chat template (transformers 5 returns a dict unless told not to)."""
    ids = tokenizer.apply_chat_template(
        list(messages), add_generation_prompt=add_generation_prompt, tokenize=True, return_dict=False
    )
    return list(ids)


def chat_labels(
    tokenizer: Any, messages: Sequence[dict[str, str]], max_length: int
) -> tuple[list[int], list[int]]:
    """Token ids of a conversation and labels that keep only the assistant turns' tokens."""
    ids = _template_ids(tokenizer, messages)
    labels = [IGNORE] * len(ids)
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        head = _template_ids(tokenizer, messages[:i], add_generation_prompt=True) if i else []
        start = len(head)
        end = len(_template_ids(tokenizer, messages[: i + 1]))
        labels[start:end] = ids[start:end]
    return ids[:max_length], labels[:max_length]


def pad(rows: Sequence[list[int]], value: int) -> torch.Tensor:
    longest = max(len(r) for r in rows)
    return torch.tensor([r + [value] * (longest - len(r)) for r in rows])


def chat_batch(lm: EgtLM, rows: Sequence[ChatRow], max_length: int = 512) -> dict[str, torch.Tensor]:
    pairs = [chat_labels(lm.tokenizer, r.messages, max_length) for r in rows]
    pad_id = lm.tokenizer.pad_token_id
    ids = pad([p[0] for p in pairs], pad_id)
    return {
        "input_ids": ids,
        "attention_mask": pad([[1] * len(p[0]) for p in pairs], 0),
        "labels": pad([p[1] for p in pairs], IGNORE),
    }


# --------------------------------------------------------------------------- block attention


def block_groups(plan: SegmentPlan) -> list[int]:
    """Per token: 0 for the prefix, i >= 1 for document i, -1 for live tokens (separators, question)."""
    groups: list[int] = []
    doc = 0
    for segment in plan.segments:
        if segment.is_prefix:
            groups += [0] * len(segment.token_ids)
        elif segment.cached:
            doc += 1
            groups += [doc] * len(segment.token_ids)
        else:
            groups += [-1] * len(segment.token_ids)
    return groups


def block_mask(groups: Sequence[int], dtype: torch.dtype) -> torch.Tensor:
    """[1, 1, s, s] additive mask of reuse: causal, and a document token sees only the prefix and its
    own document (what its captured states saw); every live token sees everything before it."""
    g = torch.tensor(list(groups))
    n = len(g)
    causal = torch.ones(n, n, dtype=torch.bool).tril()
    doc_query = (g >= 1)[:, None]
    visible = (g[None, :] == 0) | (g[None, :] == g[:, None])
    allowed = causal & (~doc_query | visible)
    mask = torch.zeros(n, n, dtype=dtype).masked_fill(~allowed, torch.finfo(dtype).min)
    return mask[None, None]


SAMPLE_MAX_TOKENS = 1024  # a distillation or anchor sample's tokens (prompt + answer) in one forward


def rag_sample(
    lm: EgtLM, row: RAGRow, max_length: int | None = SAMPLE_MAX_TOKENS
) -> tuple[list[int], list[int], int]:
    """(ids, block groups, where the answer starts) of a RAG row in the default reuse layout; over
    `max_length` tokens is an error (None: no limit, to measure a sample)."""
    plan = rag_layout(lm.tokenizer, row.question, list(row.documents))
    answer = row.answer or ""
    answer_ids = list(lm.tokenizer(answer + lm.tokenizer.eos_token, add_special_tokens=False)["input_ids"])
    ids = plan.token_ids + answer_ids
    groups = block_groups(plan) + [-1] * len(answer_ids)
    start = len(plan.token_ids)
    if max_length is not None and len(ids) > max_length:
        raise ValueError(f"A RAG sample has {len(ids)} tokens, over max_length={max_length}; use fewer docs.")
    return ids, groups, start


def block_logits(model: Any, ids: list[int], groups: list[int] | None, keep: int) -> torch.Tensor:
    """Logits of the last `keep` positions of one sample (the answer's), under the block mask
    (student) or plain causal attention (teacher, groups None). Only those positions go through the
    LM head: a full [seq, vocab] of logits per sample would cost ~200 MB for SmolLM2."""
    device = next(model.parameters()).device
    input_ids = torch.tensor([ids], device=device)
    positions = torch.arange(len(ids), device=device)[None]
    kwargs: dict[str, Any] = {"input_ids": input_ids, "position_ids": positions, "logits_to_keep": keep}
    if groups is not None:
        dtype = next(p for p in model.parameters() if p.is_floating_point()).dtype
        kwargs["attention_mask"] = block_mask(groups, dtype).to(device)
    return model(**kwargs).logits
