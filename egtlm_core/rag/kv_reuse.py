"""Turn a `SegmentPlan` into a ready KV cache: fetch or capture cached segments, re-rotate, splice.

Documents are captured once, right after the plan's fixed prefix (so a document in the first slot
gets exactly the states a full prefill would compute) and stored. At answer time each document's
keys are re-rotated to the position it lands at; live segments are prefilled on top. Stored tensors
are never mutated: re-rotation makes new keys and values are cloned when spliced.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from ..cache import CacheKey, CacheTier, KVEntry, MemoryTier, sha256_text
from ..modeling.compat import cache_kwarg
from ..modeling.rope import RopeInfo, rerotate_keys, rope_info
from .capture import DocumentPooling, PaddingSide, capture_all, capture_batch
from .segment_plan import Segment, SegmentPlan

logger = logging.getLogger(__name__)


@dataclass
class ReuseStats:
    """What one plan execution reused and computed.

    A document *slot* is exact when its spliced states are what a full prefill of the same prompt
    computes: only the first document, captured causally after this prompt's own prefix. Every later
    slot is approximate (it never attended to the documents before it), as is any slot whose states
    were captured after another prefix or bidirectionally.
    """

    reused_tokens: int = 0
    prefilled_tokens: int = 0
    hits: int = 0  # segments (prefix and documents) found in the store
    approximate_hits: int = 0  # hits spliced into an approximate slot
    other_prefix_hits: int = 0  # hits captured after another prefix than this prompt's
    misses: int = 0
    build_s: float = 0.0  # the whole prefill: the three parts below plus planning bookkeeping
    fetch_s: float = 0.0  # looking states up in the store (and capturing the ones it lacked)
    splice_s: float = 0.0  # re-rotating and copying stored states into one cache
    forward_s: float = 0.0  # the one forward of the live tokens (the floor a reuse call cannot beat)
    fallback: str | None = None  # why reuse was refused, if it was
    documents: list[dict[str, Any]] = field(default_factory=list)
    slots: list[str] = field(default_factory=list)  # "exact" | "approximate", one per document slot

    @property
    def exact_slots(self) -> int:
        return self.slots.count("exact")

    @property
    def approximate_slots(self) -> int:
        return self.slots.count("approximate")

    @property
    def recomputed_tokens(self) -> int:
        """Leading document tokens recomputed live (`recompute_tokens`) instead of spliced."""
        return sum(int(d.get("recomputed", 0)) for d in self.documents)

    def summary(self) -> dict[str, Any]:
        """The per-call report adapters put in their metadata."""
        return {
            "reused_tokens": self.reused_tokens,
            "prefilled_tokens": self.prefilled_tokens,
            "exact_slots": self.exact_slots,
            "approximate_slots": self.approximate_slots,
            "recomputed_tokens": self.recomputed_tokens,
            "hits": self.hits,
            "approximate_hits": self.approximate_hits,
            "other_prefix_hits": self.other_prefix_hits,
            "misses": self.misses,
            "fallback": self.fallback,
            "timings_ms": {
                name: round(1e3 * getattr(self, f"{name}_s"), 3)
                for name in ("build", "fetch", "splice", "forward")
            },
        }


def tokenizer_fingerprint(tokenizer: Any) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    text = backend.to_str() if backend is not None else repr(sorted(tokenizer.get_vocab().items()))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class KVReuser:
    """Builds caches for plans over one loaded model and one store."""

    def __init__(
        self,
        body: Any,
        tokenizer: Any,
        model_fingerprint: str,
        store: CacheTier,
        capture: str = "causal",
        *,
        ram: CacheTier | None = None,
        persistent_prefixes: set[tuple[int, ...]] | None = None,
        attention: str = "default",
        storage: str = "native",
    ):
        self.body = body
        self.store = store
        # Prompt heads nobody registered (a conversation's text before its first document) are kept
        # in `ram` only: the disk tier never receives conversation text.
        self.ram = ram if ram is not None else MemoryTier(max_bytes=256 << 20)
        self.persistent_prefixes = persistent_prefixes if persistent_prefixes is not None else set()
        self.capture = capture  # "causal" (exact for any model) or "bidirectional" (GRIT doc caching)
        self.rope: RopeInfo = rope_info(body)
        self._fields = dict(
            model=model_fingerprint,
            tokenizer=tokenizer_fingerprint(tokenizer),
            dtype=str(body.dtype).removeprefix("torch."),
            capture=capture,
            rope=self.rope.fingerprint,
            attention=attention,
            storage=storage,
        )

    def key(self, segment: Segment, prefix: Segment | None) -> CacheKey:
        prefix_hash = "" if prefix is None or segment.is_prefix else sha256_text(repr(prefix.token_ids))
        return CacheKey(prefix=prefix_hash, text=sha256_text(segment.text or ""), **self._fields)

    def register_prefix(self, prefix: Segment) -> None:
        """Allow this prompt head's states on every tier (a retriever's `prompt=` or the default head)."""
        self.persistent_prefixes.add(prefix.token_ids)

    def _tier(self, segment: Segment) -> CacheTier:
        """Where a segment's states live: unregistered prompt heads stay in RAM, the rest anywhere."""
        if segment.is_prefix and segment.token_ids not in self.persistent_prefixes:
            return self.ram
        return self.store

    # --- capturing ----------------------------------------------------------------------------------
    def capture_segment(self, segment: Segment, prefix_cache: DynamicCache | None) -> KVEntry:
        """Compute a segment's states after the prefix (or at position 0 for the prefix itself)."""
        return self.capture_many([segment], prefix_cache)[0]

    def capture_many(
        self,
        segments: Sequence[Segment],
        prefix_cache: DynamicCache | None,
        padding_side: PaddingSide = "right",
    ) -> list[KVEntry]:
        """Segments' states after the prefix in one padded forward (see `capture.capture_batch`)."""
        return capture_batch(
            self.body,
            segments,
            prefix_cache,
            bidirectional=self._bidirectional(segments),
            padding_side=padding_side,
            meta={"capture": self.capture},
        )

    def _bidirectional(self, segments: Sequence[Segment]) -> bool:
        """GRIT document caching: documents (never the prefix) see themselves whole."""
        if any(s.is_prefix for s in segments) and len(segments) > 1:
            raise ValueError("A prefix is captured on its own, not batched with documents.")
        return self.capture == "bidirectional" and not segments[0].is_prefix

    def _usable(self, entry: KVEntry | None, segment: Segment) -> bool:
        if entry is None:
            return False
        cfg = self.body.config
        layers = getattr(cfg, "num_hidden_layers", len(entry.keys))
        ok = entry.num_layers == layers and tuple(entry.token_ids.tolist()) == segment.token_ids
        if not ok:
            logger.warning("Stored states do not match this model/segment; recomputing.")
        return ok

    def states(
        self,
        segment: Segment,
        prefix: Segment | None,
        stats: ReuseStats,
        prefix_cache: Callable[[], DynamicCache | None],
        alternates: Sequence[Segment] = (),
    ) -> KVEntry:
        """The stored states of a segment, captured and stored on a miss (or a bad entry).

        The entry captured after this plan's own prefix is exact; failing that, one captured after an
        `alternates` prefix (e.g. the default layout's, used at indexing) is re-rotated and reused as
        an approximation rather than recomputed. `prefix_cache` is called only on a miss.
        """
        tier = self._tier(segment)
        for i, candidate in enumerate([prefix, *alternates]):
            if segment.is_prefix and i:
                break
            entry = tier.get(self.key(segment, candidate))
            if self._usable(entry, segment):
                stats.hits += 1
                stats.other_prefix_hits += bool(i)
                if not segment.is_prefix:
                    stats.approximate_hits += self._record_slot(stats, own_prefix=not i) == "approximate"
                return entry  # type: ignore[return-value]
        stats.misses += 1
        if not segment.is_prefix:
            self._record_slot(stats, own_prefix=True)
        entry = self.capture_segment(segment, None if segment.is_prefix else prefix_cache())
        tier.put(self.key(segment, prefix), entry)
        return entry

    def _record_slot(self, stats: ReuseStats, own_prefix: bool) -> str:
        """Note whether the next document slot is exact (see `ReuseStats`); -> its kind."""
        exact = not stats.slots and own_prefix and self.capture == "causal"
        stats.slots.append("exact" if exact else "approximate")
        return stats.slots[-1]

    def _prefix_loader(self, prefix: Segment | None, stats: ReuseStats) -> Callable[[], DynamicCache | None]:
        """A memoised loader of the prefix's states as a cache (None when the plan has no prefix)."""

        @functools.cache
        def load() -> DynamicCache | None:
            if prefix is None:
                return None
            cache = DynamicCache(config=self.body.config)
            self._splice(cache, self.states(prefix, None, stats, lambda: None), 0, 0)
            return cache

        return load

    def index(
        self, segments: list[Segment], prefix: Segment, show_progress: bool | None = None
    ) -> ReuseStats:
        """Capture and store documents ahead of time (the indexing half of the shared cache).

        Documents not yet stored are captured in padded batches, one forward per batch (a progress
        bar on a terminal; `show_progress` forces it on or off). A document that cannot fit the
        model's context after the prefix is not captured (its states could never be used: such a
        prompt is refused), with one warning saying to chunk it.
        """
        return self._index(segments, prefix, None, show_progress)[0]

    def index_and_embed(
        self,
        segments: list[Segment],
        prefix: Segment,
        pooling: DocumentPooling,
        show_progress: bool | None = None,
    ) -> tuple[ReuseStats, list[np.ndarray | None]]:
        """`index`, and each document's vector pooled from its capture pass (one forward per batch
        both embeds and caches). Stored documents are captured again for their vector; a document
        too long for the context gets None (embed it on its own)."""
        return self._index(segments, prefix, pooling, show_progress)

    def _index(
        self,
        segments: list[Segment],
        prefix: Segment,
        pooling: DocumentPooling | None,
        show_progress: bool | None,
    ) -> tuple[ReuseStats, list[np.ndarray | None]]:
        stats = ReuseStats()
        limit = getattr(self.body.config, "max_position_embeddings", None)
        too_long: list[int] = []
        todo: dict[CacheKey, Segment] = {}
        keys_of: list[CacheKey | None] = []
        stored: set[CacheKey] = set()  # already in the store: captured again only for their vector
        for i, segment in enumerate(segments):
            keys_of.append(None)
            if isinstance(limit, int) and len(prefix.token_ids) + len(segment.token_ids) >= limit:
                too_long.append(i)
                continue
            key = keys_of[i] = self.key(segment, prefix)
            if key in todo or self._usable(self._tier(segment).get(key), segment):
                stats.hits += 1
                if pooling is not None and key not in todo:  # its vector comes from a capture pass too
                    todo[key] = segment
                    stored.add(key)
            else:
                stats.misses += 1
                todo[key] = segment
        found: dict[CacheKey, np.ndarray | None] = {}
        if todo:
            prefix_cache = self._prefix_loader(prefix, stats)()
            keys, pending = list(todo), list(todo.values())
            bidirectional = self._bidirectional(pending[:1])
            meta = {"capture": self.capture}
            for i, entry, vector in capture_all(
                self.body,
                pending,
                prefix_cache,
                bidirectional=bidirectional,
                show_progress=show_progress,
                meta=meta,
                pooling=pooling,
            ):
                if keys[i] not in stored:
                    self._tier(pending[i]).put(keys[i], entry)
                found[keys[i]] = vector
        if too_long:
            warnings.warn(
                f"{len(too_long)} document(s) (positions {too_long[:10]}) do not fit the model's "
                f"{limit}-token context after the {len(prefix.token_ids)}-token prompt head, so their KV "
                "states were not stored and no prompt can hold them whole; split long texts into chunks.",
                UserWarning,
                stacklevel=4,
            )
        return stats, [None if key is None else found.get(key) for key in keys_of]

    # --- building a plan's cache ------------------------------------------------------------------
    def _splice(self, cache: DynamicCache, entry: KVEntry, skip: int, at: int) -> None:
        """Append entry tokens [skip:] to the cache, re-rotated from where they were captured to `at`."""
        delta = at - (entry.position_offset + skip)
        device, dtype = self.body.device, self.body.dtype
        for i, (k, v) in enumerate(zip(entry.keys, entry.values, strict=True)):
            k = rerotate_keys(k[:, skip:].to(device), delta, self.rope.inv_freq).to(dtype)
            cache.update(k[None], v[:, skip:].to(device=device, dtype=dtype).clone()[None], i)

    def _stored_part(
        self, entry: KVEntry, skip: int, at: int, keys: list[torch.Tensor], values: list[torch.Tensor]
    ) -> None:
        """Write entry tokens [skip:] into the per-layer slices `keys`/`values` [kv_heads, n, dim],
        keys re-rotated to start at `at` (the entry itself is never written to).

        Layer by layer: one layer's float32 temporaries (~0.2 MB for 300 tokens) stay in cache, which
        made this about twice as fast as rotating all layers stacked in one call (measured on the
        2-core EPYC, bf16); the rotated keys are rounded straight into the cache's buffer.
        """
        delta = at - (entry.position_offset + skip)
        for out, v in zip(values, entry.values, strict=True):
            out.copy_(v[:, skip:])
        for out, k in zip(keys, entry.keys, strict=True):
            rerotate_keys(k[:, skip:], delta, self.rope.inv_freq, out=out)

    def _splice_parts(self, parts: list[tuple[KVEntry, int, int]]) -> tuple[DynamicCache, torch.Tensor]:
        """One cache of (entry, skip, at) parts, each written once into per-layer buffers sized for
        all of them (appending one by one re-copies the growing cache); -> the cache and the position
        of each cached token. Per-layer buffers (~1 MB each) come from the allocator's reused memory;
        one buffer for all layers (tens of MB) is a fresh mapping whose page faults cost ~10 ms."""
        cache = DynamicCache(config=self.body.config)
        if not parts:
            return cache, torch.zeros(0, dtype=torch.long)
        sizes = [len(entry.token_ids) - skip for entry, skip, _ in parts]
        first = parts[0][0]
        like = {"dtype": self.body.dtype, "device": self.body.device}
        shape = (1, first.keys[0].shape[0], sum(sizes))  # [batch, kv_heads, tokens, dim]
        keys = [torch.empty(*shape, k.shape[-1], **like) for k in first.keys]
        values = [torch.empty(*shape, v.shape[-1], **like) for v in first.values]
        offset = 0
        for (entry, skip, at), n in zip(parts, sizes, strict=True):
            window = slice(offset, offset + n)
            self._stored_part(
                entry, skip, at, [k[0, :, window] for k in keys], [v[0, :, window] for v in values]
            )
            offset += n
        for i, layer in enumerate(cache.layers):
            _fill_layer(cache, layer, i, keys[i], values[i])
        positions = torch.cat([torch.arange(at, at + n) for (_, _, at), n in zip(parts, sizes, strict=True)])
        return cache, positions

    def _forward_live(
        self,
        ids: list[int],
        positions: list[int],
        cache: DynamicCache,
        cached_positions: torch.Tensor,
        lm: Any,
    ) -> torch.Tensor:
        """One forward of every live token at its own position on top of the spliced cache.

        The cache holds the spliced segments in any order; each live token attends to every token at
        or before its position (spliced or live), which is what running the live runs one by one
        between the splices computes, in one forward instead of one per separator. `lm` is the
        causal LM over `self.body`; -> the last live token's next-token logits [1, vocab].
        """
        device = self.body.device
        query = torch.tensor(positions, device=device)
        key = torch.cat((cached_positions.to(device), query))
        allowed = key[None, :] <= query[:, None]
        mask = torch.zeros(1, 1, *allowed.shape, dtype=self.body.dtype, device=device)
        mask = mask.masked_fill(~allowed, torch.finfo(self.body.dtype).min)
        inputs = {
            "input_ids": torch.tensor([ids], device=device),
            "attention_mask": mask,
            "position_ids": query[None],
            "use_cache": True,
            cache_kwarg(self.body.forward): cache,
        }
        with torch.inference_mode():
            return lm(**inputs, logits_to_keep=1).logits[:, -1]

    def _gather(
        self, plan: SegmentPlan, recompute_tokens: int, alternates: Sequence[Segment]
    ) -> tuple[DynamicCache, torch.Tensor, list[int], list[int], ReuseStats]:
        """Every segment but the last: stored ones spliced into a cache, live ones listed (ids and
        positions) for the one forward that follows; -> cache, cached positions, ids, positions, stats."""
        stats = ReuseStats()
        prefix = plan.prefix
        # The loop below already looks the prefix up (and counts it); the loader's own lookup, made
        # only when a document misses, must not count it a second time.
        load_prefix = self._prefix_loader(prefix, ReuseStats())
        parts: list[tuple[KVEntry, int, int]] = []
        live_ids: list[int] = []
        live_positions: list[int] = []
        pos = 0
        for segment in plan.segments[:-1]:
            n = len(segment.token_ids)
            live = n
            if segment.cached:
                started = time.perf_counter()
                entry = self.states(segment, prefix, stats, load_prefix, alternates)
                stats.fetch_s += time.perf_counter() - started
                # repair knob: the first tokens of an approximate slot are recomputed and see
                # everything before them (an exact slot already holds what they would compute)
                exact = segment.is_prefix or stats.slots[-1] == "exact"
                live = 0 if exact else min(recompute_tokens, n)
                if n > live:
                    parts.append((entry, live, pos + live))
                stats.reused_tokens += n - live
                stats.documents.append({"tokens": n, "position": pos, "recomputed": live})
            live_ids += segment.token_ids[:live]
            live_positions += range(pos, pos + live)
            stats.prefilled_tokens += live
            pos += n
        started = time.perf_counter()
        cache, cached_positions = self._splice_parts(parts)
        stats.splice_s = time.perf_counter() - started
        return cache, cached_positions, live_ids, live_positions, stats

    def prefill(
        self, plan: SegmentPlan, lm: Any, recompute_tokens: int = 0, alternates: Sequence[Segment] = ()
    ) -> tuple[DynamicCache, torch.Tensor, ReuseStats]:
        """The whole prompt in a cache and the next-token logits [1, vocab], in one forward.

        Stored segments are re-rotated and concatenated once per layer; every live token (separators,
        recomputed document heads and the last segment, the question) goes through `lm` together, so
        the first token comes out of the same forward. `stats` times each part (`build_s` all of it).
        """
        start = time.perf_counter()
        cache, cached, ids, positions, stats = self._gather(plan, recompute_tokens, alternates)
        tail = plan.segments[-1].token_ids
        at = len(plan.token_ids) - len(tail)
        ids, positions = ids + list(tail), positions + list(range(at, at + len(tail)))
        started = time.perf_counter()
        logits = self._forward_live(ids, positions, cache, cached, lm)
        stats.forward_s = time.perf_counter() - started
        stats.prefilled_tokens += len(tail)
        stats.build_s = time.perf_counter() - start
        return cache, logits, stats


def _fill_layer(
    cache: DynamicCache, layer: Any, index: int, keys: torch.Tensor, values: torch.Tensor
) -> None:
    """Hand a plain `DynamicLayer` the buffers themselves (`update` would copy them once more);
    other layer kinds (sliding windows) keep their own bookkeeping through `update`."""
    if type(layer) is DynamicLayer:
        layer.lazy_initialization(keys, values)
        layer.keys, layer.values = keys, values
    else:
        cache.update(keys, values, index)
