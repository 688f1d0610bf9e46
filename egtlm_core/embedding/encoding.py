"""The embedding pass: tokenize with an instruction, batch by length, forward, pool, capture caches.

A text must embed the same alone or in any batch. Three things make that hold: positions count
real tokens only (`attention.position_ids_for`), the attention mask blocks padding keys, and the
instruction boundary comes from the offsets of the full text's tokenization (tokenizing the
instruction alone miscounts where tokens merge across the boundary).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import DynamicCache

from ..modeling.attention import embedding_attention_mask, position_ids_for
from ..modeling.compat import cache_kwarg, expanded_cache, layer_states
from .pooling import pool

logger = logging.getLogger(__name__)


@dataclass
class TokenizedText:
    """One text ready for the model: `ids[content_start:]` are the pooled (non-instruction) tokens."""

    ids: list[int]
    content_start: int
    truncated: bool = False


def tokenize_for_embedding(
    tokenizer: Any, texts: Sequence[str], instruction: str, max_length: int, suffix_ids: Sequence[int] = ()
) -> list[TokenizedText]:
    """Tokenize `instruction + text` (+ suffix ids, e.g. EOS), truncating the text part to `max_length`."""
    encoded = tokenizer(
        [instruction + t for t in texts], add_special_tokens=True, return_offsets_mapping=True
    )
    boundary = len(instruction)
    out = []
    for ids, offsets in zip(encoded["input_ids"], encoded["offset_mapping"], strict=True):
        # First token that covers a character of the text; BOS (offsets (0, 0)) stays on the instruction side.
        start = next((i for i, (_, end) in enumerate(offsets) if end > boundary), len(ids))
        keep = max_length - len(suffix_ids)
        if start >= keep:
            raise ValueError(
                f"The instruction takes {start} tokens, leaving no room for text within max_length="
                f"{max_length}; shorten the instruction or raise max_length."
            )
        truncated = len(ids) > keep
        out.append(TokenizedText(list(ids[:keep]) + list(suffix_ids), start, truncated))
    return out


def tokenize_after_prefix(
    tokenizer: Any, texts: Sequence[str], prefix_ids: Sequence[int], max_length: int
) -> list[TokenizedText]:
    """`prefix_ids` then each text tokenized on its own (no special tokens), the text part cut to
    `max_length` tokens: exactly the tokens the shared cache captures a document as, after its
    prompt head (`document_context="rag"`)."""
    encoded = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    head = list(prefix_ids)
    return [TokenizedText(head + list(ids[:max_length]), len(head), len(ids) > max_length) for ids in encoded]


def shared_prefix_length(items: Sequence[TokenizedText]) -> int:
    """How many leading (instruction-side) tokens every item has in common."""
    first = items[0].ids
    n = min(min(it.content_start, len(it.ids) - 1) for it in items)  # every row keeps a token
    for it in items[1:]:
        while n and it.ids[:n] != first[:n]:
            n -= 1
    return n


def pad_batch(
    items: Sequence[TokenizedText], pad_id: int, side: str, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """-> input_ids, attention_mask, content_mask, each [batch, longest]."""
    longest = max(len(it.ids) for it in items)
    ids = torch.full((len(items), longest), pad_id, dtype=torch.long)
    attention = torch.zeros(len(items), longest, dtype=torch.long)
    content = torch.zeros(len(items), longest, dtype=torch.long)
    for row, it in enumerate(items):
        n = len(it.ids)
        lo = longest - n if side == "left" else 0
        ids[row, lo : lo + n] = torch.tensor(it.ids)
        attention[row, lo : lo + n] = 1
        content[row, lo + it.content_start : lo + n] = 1
    return ids.to(device), attention.to(device), content.to(device)


def layer_masks(config: Any, attention_mask: torch.Tensor, causal: bool, dtype: torch.dtype) -> Any:
    """Our 4D mask, windowed for sliding-window layers: a 4D mask is passed through as-is, so the model
    would otherwise let those layers see the whole text. Models with full and sliding layers (Qwen2,
    Gemma) take one mask per layer type; Mistral-style models (no layer types) are sliding throughout."""
    full = embedding_attention_mask(attention_mask, causal=causal, dtype=dtype)
    window = getattr(config, "sliding_window", None)
    types = getattr(config, "layer_types", None) or ()
    if window is None or attention_mask.shape[1] <= window or (types and "sliding_attention" not in types):
        return full
    sliding = embedding_attention_mask(attention_mask, causal=causal, dtype=dtype, sliding_window=window)
    return {"full_attention": full, "sliding_attention": sliding} if "full_attention" in types else sliding


def forward_states(
    body: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, causal: bool, use_cache: bool
) -> tuple[torch.Tensor, DynamicCache | None]:
    """One pass of the bare transformer with our own mask -> (last hidden states, cache or None)."""
    mask = layer_masks(body.config, attention_mask, causal=causal, dtype=body.dtype)
    out = body(
        input_ids=input_ids,
        attention_mask=mask,
        position_ids=position_ids_for(attention_mask),
        use_cache=use_cache,
    )
    return out.last_hidden_state, (out.cache if use_cache else None)


def split_cache(cache: DynamicCache, attention_mask: torch.Tensor, config: Any) -> list[DynamicCache]:
    """A batch's cache -> one cache per row with the padding positions removed."""
    states = layer_states(cache)
    if any(keys.shape[2] != attention_mask.shape[1] for keys, _ in states):
        # A sliding-window layer keeps only its last tokens, so a text's full states are gone.
        raise ValueError(
            f"get_cache=True needs every text (padded batch: {attention_mask.shape[1]} tokens) to fit the "
            f"model's sliding window ({getattr(config, 'sliding_window', None)} tokens); shorten the texts "
            "with max_length, or encode them without get_cache."
        )
    caches = []
    for row in range(attention_mask.shape[0]):
        real = attention_mask[row].bool()
        data = [(k[row : row + 1, :, real].clone(), v[row : row + 1, :, real].clone()) for k, v in states]
        caches.append(DynamicCache(ddp_cache_data=data, config=config))
    return caches


def length_sorted_batches(
    items: Sequence[TokenizedText], batch_size: int, max_tokens: int | None = None
) -> list[list[int]]:
    """Indices grouped longest-first, so each batch pads little; at most `batch_size` texts and, with
    `max_tokens`, at most that many padded tokens per batch (a longer text still goes alone)."""
    order = sorted(range(len(items)), key=lambda i: -len(items[i].ids))
    batches: list[list[int]] = []
    for i in order:
        batch = batches[-1] if batches else None
        longest = len(items[batch[0]].ids) if batch else 0  # longest-first: the batch's first item
        if (
            batch
            and len(batch) < batch_size
            and (max_tokens is None or (len(batch) + 1) * longest <= max_tokens)
        ):
            batch.append(i)
        else:
            batches.append([i])
    return batches


def warn_truncated(items: Sequence[TokenizedText], max_length: int) -> None:
    count = sum(it.truncated for it in items)
    if count:
        warnings.warn(
            f"{count} of {len(items)} texts were longer than max_length={max_length} tokens and were "
            "truncated; raise max_length or split long texts into chunks.",
            UserWarning,
            stacklevel=3,
        )


@dataclass
class EmbeddingPass:
    """Everything one `encode` call needs to know about the model and its settings."""

    body: Any
    pad_id: int
    padding_side: str
    pooling: str
    causal: bool
    normalize: bool
    capture: str  # "reuse": take the cache from this pass; "causal": run a causal pass for it

    def vectors(self, items: Sequence[TokenizedText]) -> torch.Tensor:
        """One batch's pooled (and normalised) vectors with autograd on: what training backpropagates
        through, so training embeds exactly as `encode` does.

        Under causal attention the instruction tokens every item shares (a query instruction, the
        RAG head of `document_context="rag"`) do not depend on what follows, so they run once and
        their states are expanded to the batch: the same vectors as per-row, fewer tokens.
        """
        shared = shared_prefix_length(items) if self.causal and len(items) > 1 else 0
        if shared < 2:
            ids, attention, content = pad_batch(items, self.pad_id, self.padding_side, self.body.device)
            hidden, _ = forward_states(self.body, ids, attention, self.causal, use_cache=False)
            vectors = pool(hidden, attention, content, self.pooling)
        else:
            vectors = self._vectors_after_shared(items, shared)
        return torch.nn.functional.normalize(vectors, p=2, dim=-1) if self.normalize else vectors

    def _vectors_after_shared(self, items: Sequence[TokenizedText], shared: int) -> torch.Tensor:
        """Shared head once, then the rows over its expanded states (gradients reach the head)."""
        device = self.body.device
        head = torch.tensor([items[0].ids[:shared]], device=device)
        kwarg = cache_kwarg(self.body.forward)
        prefix_cache = DynamicCache(config=self.body.config)
        self.body(input_ids=head, use_cache=True, **{kwarg: prefix_cache})
        if prefix_cache.get_seq_length() != shared:  # e.g. gradient checkpointing turned caching off
            ids, attention, content = pad_batch(items, self.pad_id, self.padding_side, device)
            hidden, _ = forward_states(self.body, ids, attention, self.causal, use_cache=False)
            return pool(hidden, attention, content, self.pooling)
        cache = expanded_cache(prefix_cache, len(items), self.body.config)
        rest = [TokenizedText(it.ids[shared:], it.content_start - shared) for it in items]
        ids, attention, content = pad_batch(rest, self.pad_id, "right", device)
        keys = torch.cat((torch.ones(len(items), shared, dtype=attention.dtype, device=device), attention), 1)
        positions = (attention.cumsum(dim=1) - 1).clamp(min=0) + shared
        hidden = self.body(
            input_ids=ids, attention_mask=keys, position_ids=positions, use_cache=True, **{kwarg: cache}
        ).last_hidden_state
        return pool(hidden, attention, content, self.pooling)

    def run(
        self,
        items: Sequence[TokenizedText],
        batch_size: int,
        dim: int | None,
        get_cache: bool,
        show_progress: bool,
        on_batch: Callable[[int], None] | None = None,
        max_batch_tokens: int | None = None,
    ) -> tuple[np.ndarray, list[DynamicCache] | None]:
        device = self.body.device
        hidden_size = self.body.config.hidden_size
        out = np.zeros((len(items), dim or hidden_size), dtype=np.float32)
        caches: list[DynamicCache | None] = [None] * len(items)
        batches = length_sorted_batches(items, batch_size, max_batch_tokens)
        with torch.inference_mode():
            for idx in tqdm(batches, desc="Encoding", unit="batch", disable=not show_progress):
                ids, attention, content = pad_batch(
                    [items[i] for i in idx], self.pad_id, self.padding_side, device
                )
                take_cache = get_cache and self.capture == "reuse"
                hidden, cache = forward_states(self.body, ids, attention, self.causal, take_cache)
                vectors = pool(hidden, attention, content, self.pooling)
                if dim:  # Matryoshka: the leading dimensions, re-normalised below
                    vectors = vectors[:, :dim]
                if self.normalize:
                    vectors = torch.nn.functional.normalize(vectors, p=2, dim=-1)
                out[idx] = vectors.cpu().numpy()
                if get_cache:
                    if cache is None:  # bidirectional embedding: a causal pass gives generation-exact states
                        _, cache = forward_states(self.body, ids, attention, causal=True, use_cache=True)
                    assert cache is not None  # both branches above produce one
                    for i, c in zip(idx, split_cache(cache, attention, self.body.config), strict=True):
                        caches[i] = c
                if on_batch:
                    on_batch(len(idx))
        return out, (caches if get_cache else None)  # type: ignore[return-value]
