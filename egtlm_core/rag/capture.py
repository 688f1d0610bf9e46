"""Capturing segments' KV states in padded batches: one forward per batch, no pad token kept.

Indexing used to run one forward per document. Here documents of similar length share a forward
over the prefix's states (expanded to the batch), and each row's states are sliced back out by its
real tokens only, as `embedding.encoding.split_cache` does for the embedding pass. Three things keep
a batched capture equal to a document captured alone: positions count each row's real tokens from
the end of the prefix (left padding does not shift them), the attention mask blocks pad keys, and
pad columns are dropped before storing (a stored entry never carries a pad token's key).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import DynamicCache

from ..cache import KVEntry
from ..embedding.pooling import pool
from ..modeling.attention import embedding_attention_mask
from ..modeling.compat import cache_kwarg, expanded_cache, layer_states
from .segment_plan import Segment

PaddingSide = Literal["left", "right"]
MAX_BATCH_TOKENS = 2048  # padded document tokens per capture forward (CPU: beyond this, no gain)
MAX_BATCH_SIZE = 16


@dataclass(frozen=True)
class DocumentPooling:
    """How a document's vector is pooled out of its capture pass (one-pass indexing): what
    `encode_documents` does under `document_context="rag"`, whose tokens are the capture's."""

    method: str  # embedding.pooling method
    normalize: bool
    max_tokens: int  # a document's first tokens that are pooled (its states are all kept)


def pool_rows(hidden: torch.Tensor, real: torch.Tensor, pooling: DocumentPooling) -> torch.Tensor:
    """[b, L, d] capture states -> [b, d] vectors over each row's first `max_tokens` real tokens:
    under causal attention those states are the ones a pass over the truncated text computes."""
    rank = real.long().cumsum(dim=1)
    pooled = (real & (rank <= pooling.max_tokens)).long().to(hidden.device)
    vectors = pool(hidden, pooled, pooled, pooling.method)
    return torch.nn.functional.normalize(vectors, p=2, dim=-1) if pooling.normalize else vectors


def capture_batches(
    segments: Sequence[Segment],
    max_tokens: int = MAX_BATCH_TOKENS,
    max_size: int = MAX_BATCH_SIZE,
) -> list[list[int]]:
    """Indices of `segments` grouped longest-first, each group at most `max_size` segments and
    `max_tokens` padded tokens (a longer segment still goes alone)."""
    order = sorted(range(len(segments)), key=lambda i: -len(segments[i].token_ids))
    batches: list[list[int]] = []
    for i in order:
        batch = batches[-1] if batches else None
        longest = len(segments[batch[0]].token_ids) if batch else 0
        if batch and len(batch) < max_size and (len(batch) + 1) * longest <= max_tokens:
            batch.append(i)
        else:
            batches.append([i])
    return batches


def _pad(
    segments: Sequence[Segment], start: int, pad_id: int, side: PaddingSide
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """-> input ids [b, L], positions [b, L] (real tokens at start.. in every row), real-token mask [b, L]."""
    longest = max(len(s.token_ids) for s in segments)
    ids = torch.full((len(segments), longest), pad_id, dtype=torch.long)
    positions = torch.full((len(segments), longest), start, dtype=torch.long)
    real = torch.zeros(len(segments), longest, dtype=torch.bool)
    for row, segment in enumerate(segments):
        n = len(segment.token_ids)
        lo = longest - n if side == "left" else 0
        ids[row, lo : lo + n] = torch.tensor(segment.token_ids)
        positions[row, lo : lo + n] = torch.arange(start, start + n)
        real[row, lo : lo + n] = True
    return ids, positions, real


def capture_batch(
    body: Any,
    segments: Sequence[Segment],
    prefix_cache: DynamicCache | None,
    *,
    bidirectional: bool = False,
    pad_id: int = 0,  # any id: pad tokens are masked out and dropped
    padding_side: PaddingSide = "right",
    meta: dict[str, Any] | None = None,
) -> list[KVEntry]:
    """Each segment's states after the prefix (or from position 0 without one), in one forward.

    Causal capture passes a 2D padding mask, so transformers builds the causal (and sliding-window)
    mask itself; bidirectional capture (GRIT document caching) passes a 4D mask in which a row's real
    tokens see the prefix and each other, never a pad.
    """
    return capture_pooled(
        body,
        segments,
        prefix_cache,
        None,
        bidirectional=bidirectional,
        pad_id=pad_id,
        padding_side=padding_side,
        meta=meta,
    )[0]


def capture_pooled(
    body: Any,
    segments: Sequence[Segment],
    prefix_cache: DynamicCache | None,
    pooling: DocumentPooling | None,
    *,
    bidirectional: bool = False,
    pad_id: int = 0,
    padding_side: PaddingSide = "right",
    meta: dict[str, Any] | None = None,
) -> tuple[list[KVEntry], np.ndarray | None]:
    """`capture_batch`, and with `pooling` each document's vector [b, d] pooled from the same pass."""
    if not segments:
        return [], None
    start = 0 if prefix_cache is None else prefix_cache.get_seq_length()
    device = body.device
    ids, positions, real = _pad(segments, start, pad_id, padding_side)
    # Keys: the prefix (all real) then the padded rows.
    keys_real = torch.cat((torch.ones(len(segments), start, dtype=torch.bool), real), dim=1)
    mask: torch.Tensor = keys_real.long().to(device)
    if bidirectional:
        full = embedding_attention_mask(mask, causal=False, dtype=body.dtype)
        mask = full[:, :, start:, :]
    cache = expanded_cache(prefix_cache, len(segments), body.config)
    with torch.inference_mode():
        out = body(
            input_ids=ids.to(device),
            attention_mask=mask,
            position_ids=positions.to(device),
            use_cache=True,
            **{cache_kwarg(body.forward): cache},
        )
    states = layer_states(cache)
    vectors = None if pooling is None else pool_rows(out.last_hidden_state, real, pooling).cpu().numpy()
    entries = []
    for row, segment in enumerate(segments):
        cols = (torch.nonzero(real[row]).squeeze(1) + start).to(device)  # this row's real tokens only
        keys = [k[row].index_select(1, cols).cpu() for k, _ in states]
        values = [v[row].index_select(1, cols).cpu() for _, v in states]
        token_ids = torch.tensor(segment.token_ids, dtype=torch.long)
        entries.append(KVEntry(keys, values, token_ids, position_offset=start, meta=dict(meta or {})))
    return entries, vectors


def capture_all(
    body: Any,
    segments: Sequence[Segment],
    prefix_cache: DynamicCache | None,
    *,
    bidirectional: bool = False,
    pad_id: int = 0,
    show_progress: bool | None = None,
    meta: dict[str, Any] | None = None,
    max_tokens: int = MAX_BATCH_TOKENS,
    pooling: DocumentPooling | None = None,
) -> Iterator[tuple[int, KVEntry, np.ndarray | None]]:
    """(index in `segments`, entry, vector or None) for every segment, batch by batch (a progress
    bar per batch; None: shown on a terminal only); vectors are pooled with `pooling`."""
    batches = capture_batches(segments, max_tokens=max_tokens)
    disable = None if show_progress is None else not show_progress  # tqdm: None = off unless a TTY
    for idx in tqdm(batches, desc="Capturing KV states", unit="batch", disable=disable):
        group = [segments[i] for i in idx]
        entries, vectors = capture_pooled(
            body, group, prefix_cache, pooling, bidirectional=bidirectional, pad_id=pad_id, meta=meta
        )
        for row, (i, entry) in enumerate(zip(idx, entries, strict=True)):
            yield i, entry, None if vectors is None else vectors[row]
