"""InBedder answer-state embeddings: embed a text by the model's expected answer to a question about it.

An instruction such as "What kind of answer does this question expect?" turns embedding into
question answering: the text goes into a prompt (`ANSWER_TEMPLATE`), the model greedily generates a
few answer tokens, and the vector is taken from the hidden states that produce them. Two texts that
call for the same answer then land close together, whatever their wording.

Which states: the *answer state* of generated token t is the hidden state (at `layer`) of the
position that predicts it — for t = 1 the last prompt position, for t > 1 the position of token
t - 1. "first" pools the first answer state, "last" the last one, "mean" the mean over the answer
states of non-special tokens (an EOS and what follows it are left out; a row whose first token is
special keeps its first state). Batches are left-padded with positions that count real tokens only,
so a text gets the same vector and answer alone or in any batch.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import DynamicCache

from ..modeling.attention import position_ids_for
from ..modeling.compat import cache_kwarg
from .inputs import check_texts

AnswerPool = Literal["first", "mean", "last"]
ANSWER_POOLS: tuple[str, ...] = ("first", "mean", "last")
ANSWER_TEMPLATE = "### Input:\n{input}\n\n### Instruction:\n{instruction}\n\n### Response:"


@dataclass(frozen=True)
class AnswerOptions:
    """How answer states are taken.

    Attributes:
        instruction: the question asked about every text.
        template: the prompt, with `{input}` and `{instruction}` (InBedder's by default).
        layer: which hidden layer (-1: the last, after the final norm; 0: the embeddings).
        answer_tokens: how many tokens to generate greedily (≥ 1).
        pool: "first", "mean" or "last" (see the module docstring).
        max_length: tokens of each input kept (the prompt around it is never cut).
        batch_size: texts per forward.
    """

    instruction: str
    template: str = ANSWER_TEMPLATE
    layer: int = -1
    answer_tokens: int = 3
    pool: AnswerPool = "first"
    max_length: int = 512
    batch_size: int = 16

    def __post_init__(self) -> None:
        if not isinstance(self.instruction, str) or not self.instruction.strip():
            raise ValueError("method='answer' needs an instruction: the question asked about each text.")
        if "{input}" not in self.template or "{instruction}" not in self.template:
            raise ValueError(
                f"The answer template needs {{input}} and {{instruction}}, got {self.template!r}."
            )
        if self.pool not in ANSWER_POOLS:
            raise ValueError(f"Unknown answer pool {self.pool!r}; expected one of {ANSWER_POOLS}.")
        for name in ("answer_tokens", "max_length", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}.")
        if not isinstance(self.layer, int) or isinstance(self.layer, bool):
            raise ValueError(f"layer must be an integer, got {self.layer!r}.")


@dataclass
class AnswerEmbeddings:
    """float32 vectors [n, d] and the greedy answer each was taken from (special tokens dropped)."""

    vectors: np.ndarray
    answers: list[str]


def answer_prompts(tokenizer: Any, texts: Sequence[str], options: AnswerOptions) -> list[list[int]]:
    """Token ids of each text's prompt; an input longer than `max_length` tokens is cut (with a warning)."""
    pieces = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    cut = [i for i, ids in enumerate(pieces) if len(ids) > options.max_length]
    if cut:
        warnings.warn(
            f"{len(cut)} of {len(texts)} texts were longer than max_length={options.max_length} tokens "
            "and were truncated before answering.",
            UserWarning,
            stacklevel=3,
        )
    inputs = [
        tokenizer.decode(p[: options.max_length]) if i in cut else t
        for i, (t, p) in enumerate(zip(texts, pieces, strict=True))
    ]
    prompts = [options.template.format(input=t, instruction=options.instruction) for t in inputs]
    return [list(ids) for ids in tokenizer(prompts, add_special_tokens=True)["input_ids"]]


def left_pad(
    rows: Sequence[Sequence[int]], pad_id: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """-> input_ids, attention_mask [batch, longest], real tokens at the right end of each row."""
    longest = max(len(r) for r in rows)
    ids = torch.full((len(rows), longest), pad_id, dtype=torch.long)
    mask = torch.zeros(len(rows), longest, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, longest - len(r) :] = torch.tensor(list(r), dtype=torch.long)
        mask[i, longest - len(r) :] = 1
    return ids.to(device), mask.to(device)


def _pool(states: torch.Tensor, keep: torch.Tensor, method: str) -> torch.Tensor:
    """states [b, steps, d], keep [b, steps] (answer states of non-special tokens) -> [b, d]."""
    if method == "first":
        return states[:, 0]
    keep = keep.clone()
    keep[keep.sum(dim=1) == 0, 0] = True  # an answer that starts with a special token: its first state
    if method == "last":
        last = (keep.long() * torch.arange(1, keep.shape[1] + 1, device=keep.device)).argmax(dim=1)
        return states[torch.arange(states.shape[0], device=states.device), last]
    weights = keep.to(states.dtype).unsqueeze(-1)
    return (states * weights).sum(dim=1) / weights.sum(dim=1)


@torch.inference_mode()
def answer_batch(
    model: Any, tokenizer: Any, prompts: Sequence[Sequence[int]], options: AnswerOptions
) -> tuple[torch.Tensor, list[list[int]]]:
    """Greedy answers for one batch: pooled answer states [b, d] (float32) and the generated ids."""
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    special = torch.tensor(sorted(set(tokenizer.all_special_ids)), device=model.device)
    ids, mask = left_pad(prompts, int(pad_id), model.device)
    cache = DynamicCache(config=model.config)
    kwarg = cache_kwarg(model.forward)
    positions = position_ids_for(mask)
    done = torch.zeros(len(prompts), dtype=torch.bool, device=model.device)
    states, keep, tokens = [], [], []
    for _ in range(options.answer_tokens):
        out = model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            use_cache=True,
            output_hidden_states=True,
            **{kwarg: cache},
        )
        states.append(out.hidden_states[options.layer][:, -1].float())
        token = out.logits[:, -1].argmax(dim=-1)
        keep.append(~done & ~torch.isin(token, special))
        tokens.append(torch.where(done, torch.full_like(token, int(pad_id)), token))
        done = done | torch.isin(token, special)
        ids = token.unsqueeze(1)
        mask = torch.cat((mask, torch.ones_like(ids)), dim=1)
        positions = positions[:, -1:] + 1
    pooled = _pool(torch.stack(states, dim=1), torch.stack(keep, dim=1), options.pool)
    kept = torch.stack(keep, dim=1)
    generated = torch.stack(tokens, dim=1)
    answers = [
        [int(t) for t, k in zip(row, ks, strict=True) if k] for row, ks in zip(generated, kept, strict=True)
    ]
    return pooled, answers


def answer_embeddings(
    model: Any,
    tokenizer: Any,
    texts: Sequence[str],
    options: AnswerOptions,
    normalize: bool = True,
    show_progress: bool = False,
) -> AnswerEmbeddings:
    """Answer-state vectors of `texts` (longest first in batches, returned in input order).

    Example:
        >>> opts = AnswerOptions("What kind of answer does this question expect?")
        >>> answer_embeddings(lm.model, lm.tokenizer, ["Who wrote Hamlet?"], opts).answers
    """
    prompts = answer_prompts(tokenizer, texts, options)
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    vectors = np.zeros((len(prompts), int(model.config.hidden_size)), dtype=np.float32)
    answers: list[str] = [""] * len(prompts)
    batches = [order[i : i + options.batch_size] for i in range(0, len(order), options.batch_size)]
    for idx in tqdm(batches, desc="Answering", unit="batch", disable=not show_progress):
        pooled, generated = answer_batch(model, tokenizer, [prompts[i] for i in idx], options)
        if normalize:
            pooled = torch.nn.functional.normalize(pooled, p=2, dim=-1)
        vectors[idx] = pooled.cpu().numpy()
        for i, ids in zip(idx, generated, strict=True):
            answers[i] = tokenizer.decode(ids, skip_special_tokens=True).strip()
    return AnswerEmbeddings(vectors, answers)


def encode_answers(
    model: Any,
    tokenizer: Any,
    texts: Any,
    instruction: str | None,
    *,
    normalize: bool,
    batch_size: int,
    max_length: int,
    convert_to_tensor: bool = False,
    show_progress_bar: bool | None = None,
    return_answers: bool = False,
    answer_template: str = ANSWER_TEMPLATE,
    layer: int = -1,
    answer_tokens: int = 3,
    pool: str = "first",
    dim: int | None = None,
) -> Any:
    """`EgtLM.encode(..., method="answer")`: vectors ([d] for one string), and the answers with
    `return_answers=True`. `dim` keeps the leading dimensions (re-normalised)."""
    items, single = check_texts(texts)
    options = AnswerOptions(
        instruction or "",
        template=answer_template,
        layer=layer,
        answer_tokens=answer_tokens,
        pool=pool,  # type: ignore[arg-type]  # checked in AnswerOptions
        max_length=max_length,
        batch_size=batch_size,
    )
    result = answer_embeddings(
        model, tokenizer, items, options, normalize=False, show_progress=bool(show_progress_bar)
    )
    vectors = torch.from_numpy(result.vectors[:, :dim] if dim else result.vectors)
    if normalize:
        vectors = torch.nn.functional.normalize(vectors, p=2, dim=-1)
    out: Any = vectors if convert_to_tensor else vectors.numpy()
    answers: Any = result.answers
    if single:
        out, answers = out[0], answers[0]
    return (out, answers) if return_answers else out
