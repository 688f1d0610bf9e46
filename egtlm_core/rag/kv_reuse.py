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

import torch
from transformers import DynamicCache

from ..cache import CacheKey, CacheTier, KVEntry, sha256_text
from ..modeling.attention import embedding_attention_mask
from ..modeling.compat import cache_kwarg, layer_states
from ..modeling.rope import RopeInfo, rerotate_keys, rope_info
from .segment_plan import Segment, SegmentPlan

logger = logging.getLogger(__name__)


def check_recompute_tokens(recompute_tokens: Any) -> None:
    """`recompute_tokens` is how many leading tokens of each spliced document are recomputed."""
    n = recompute_tokens
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"recompute_tokens must be an integer ≥ 0, got {n!r}.")


@dataclass
class ReuseStats:
    """What one plan execution reused and computed."""

    reused_tokens: int = 0
    prefilled_tokens: int = 0
    hits: int = 0
    approximate_hits: int = 0  # hits captured after another prefix than this prompt's
    misses: int = 0
    build_s: float = 0.0
    fallback: str | None = None  # why reuse was refused, if it was
    documents: list[dict[str, Any]] = field(default_factory=list)


def tokenizer_fingerprint(tokenizer: Any) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    text = backend.to_str() if backend is not None else repr(sorted(tokenizer.get_vocab().items()))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class KVReuser:
    """Builds caches for plans over one loaded model and one store."""

    def __init__(
        self, body: Any, tokenizer: Any, model_fingerprint: str, store: CacheTier, capture: str = "causal"
    ):
        self.body = body
        self.store = store
        self.capture = capture  # "causal" (exact for any model) or "bidirectional" (GRIT doc caching)
        self.rope: RopeInfo = rope_info(body)
        self._fields = dict(
            model=model_fingerprint,
            tokenizer=tokenizer_fingerprint(tokenizer),
            dtype=str(body.dtype).removeprefix("torch."),
            capture=capture,
            rope=self.rope.fingerprint,
        )

    def key(self, segment: Segment, prefix: Segment | None) -> CacheKey:
        prefix_hash = "" if prefix is None or segment.is_prefix else sha256_text(repr(prefix.token_ids))
        return CacheKey(prefix=prefix_hash, text=sha256_text(segment.text or ""), **self._fields)

    # --- forward passes ---------------------------------------------------------------------------
    def _forward(self, ids: Any, cache: DynamicCache, start: int, bidirectional: bool = False) -> None:
        """Run `ids` at positions start.. on top of `cache` (which grows by len(ids))."""
        n = len(ids)
        input_ids = torch.tensor([list(ids)], device=self.body.device)
        mask: torch.Tensor = torch.ones(1, start + n, dtype=torch.long, device=self.body.device)
        if bidirectional:  # GRIT doc caching: the document sees itself whole (and what precedes it)
            full = embedding_attention_mask(mask, causal=False, dtype=self.body.dtype)
            mask = full[:, :, start:, :]
        positions = torch.arange(start, start + n, device=self.body.device)[None]
        with torch.inference_mode():
            self.body(
                input_ids=input_ids,
                attention_mask=mask,
                position_ids=positions,
                use_cache=True,
                **{cache_kwarg(self.body.forward): cache},
            )

    def capture_segment(self, segment: Segment, prefix_cache: DynamicCache | None) -> KVEntry:
        """Compute a segment's states after the prefix (or at position 0 for the prefix itself)."""
        start = 0 if prefix_cache is None else prefix_cache.get_seq_length()
        cache = DynamicCache(config=self.body.config)
        if prefix_cache is not None:
            for i, (k, v) in enumerate(layer_states(prefix_cache)):
                cache.update(k, v, i)
        self._forward(
            segment.token_ids,
            cache,
            start,
            bidirectional=self.capture == "bidirectional" and not segment.is_prefix,
        )
        states = layer_states(cache)
        keys = [k[0, :, start:].clone().cpu() for k, _ in states]
        values = [v[0, :, start:].clone().cpu() for _, v in states]
        ids = torch.tensor(segment.token_ids, dtype=torch.long)
        return KVEntry(keys, values, ids, position_offset=start, meta={"capture": self.capture})

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
        for i, candidate in enumerate([prefix, *alternates]):
            if segment.is_prefix and i:
                break
            entry = self.store.get(self.key(segment, candidate))
            if self._usable(entry, segment):
                stats.hits += 1
                stats.approximate_hits += bool(i)
                return entry  # type: ignore[return-value]
        stats.misses += 1
        entry = self.capture_segment(segment, None if segment.is_prefix else prefix_cache())
        self.store.put(self.key(segment, prefix), entry)
        return entry

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

    def index(self, segments: list[Segment], prefix: Segment) -> ReuseStats:
        """Capture and store documents ahead of time (the indexing half of the shared cache).

        A document that cannot fit the model's context after the prefix is not captured (its states
        could never be used: such a prompt is refused), with one warning saying to chunk it.
        """
        stats = ReuseStats()
        load_prefix = self._prefix_loader(prefix, stats)
        limit = getattr(self.body.config, "max_position_embeddings", None)
        too_long = []
        for i, segment in enumerate(segments):
            if isinstance(limit, int) and len(prefix.token_ids) + len(segment.token_ids) >= limit:
                too_long.append(i)
                continue
            self.states(segment, prefix, stats, load_prefix)
        if too_long:
            warnings.warn(
                f"{len(too_long)} document(s) (positions {too_long[:10]}) do not fit the model's "
                f"{limit}-token context after the {len(prefix.token_ids)}-token prompt head, so their KV "
                "states were not stored and no prompt can hold them whole; split long texts into chunks.",
                UserWarning,
                stacklevel=3,
            )
        return stats

    # --- building a plan's cache ------------------------------------------------------------------
    def _splice(self, cache: DynamicCache, entry: KVEntry, skip: int, at: int) -> None:
        """Append entry tokens [skip:] to the cache, re-rotated from where they were captured to `at`."""
        delta = at - (entry.position_offset + skip)
        device, dtype = self.body.device, self.body.dtype
        for i, (k, v) in enumerate(zip(entry.keys, entry.values, strict=True)):
            k = rerotate_keys(k[:, skip:].to(device), delta, self.rope.inv_freq).to(dtype)
            cache.update(k[None], v[:, skip:].to(device=device, dtype=dtype).clone()[None], i)

    def _stored_part(self, entry: KVEntry, skip: int, at: int) -> tuple[list[Any], list[Any]]:
        """Entry tokens [skip:] per layer, keys re-rotated to start at `at` (all layers in one op)."""
        delta = at - (entry.position_offset + skip)
        device, dtype = self.body.device, self.body.dtype
        values = [v[:, skip:].to(device=device, dtype=dtype) for v in entry.values]
        if delta == 0:
            keys = [k[:, skip:].to(device=device, dtype=dtype) for k in entry.keys]
        else:
            stacked = torch.stack([k[:, skip:] for k in entry.keys]).to(device)
            keys = list(rerotate_keys(stacked, delta, self.rope.inv_freq).to(dtype).unbind(0))
        return keys, values

    def _forward_live(
        self, ids: list[int], positions: list[int], cache: DynamicCache, cached_positions: torch.Tensor
    ) -> None:
        """One forward of every live token at its own position on top of the spliced cache.

        The cache holds the spliced segments in any order; each live token attends to every token at
        or before its position (spliced or live), which is what running the live runs one by one
        between the splices computes, in one forward instead of one per separator.
        """
        device = self.body.device
        query = torch.tensor(positions, device=device)
        key = torch.cat((cached_positions.to(device), query))
        allowed = key[None, :] <= query[:, None]
        mask = torch.zeros(1, 1, *allowed.shape, dtype=self.body.dtype, device=device)
        mask = mask.masked_fill(~allowed, torch.finfo(self.body.dtype).min)
        with torch.inference_mode():
            self.body(
                input_ids=torch.tensor([ids], device=device),
                attention_mask=mask,
                position_ids=query[None],
                use_cache=True,
                **{cache_kwarg(self.body.forward): cache},
            )

    def build(
        self, plan: SegmentPlan, recompute_tokens: int = 0, alternates: Sequence[Segment] = ()
    ) -> tuple[DynamicCache, ReuseStats]:
        """A cache holding every segment but the last (live) one, plus what it cost.

        Stored segments are re-rotated and concatenated once per layer (appending them one by one
        re-copies the growing cache each time); the live runs between them (separators, recomputed
        document heads) then go through the model together in one forward.
        """
        start = time.perf_counter()
        stats = ReuseStats()
        prefix = plan.prefix
        # The loop below already looks the prefix up (and counts it); the loader's own lookup, made
        # only when a document misses, must not count it a second time.
        load_prefix = self._prefix_loader(prefix, ReuseStats())
        layers = int(self.body.config.num_hidden_layers)
        keys: list[list[Any]] = [[] for _ in range(layers)]
        values: list[list[Any]] = [[] for _ in range(layers)]
        stored_positions: list[torch.Tensor] = []
        live_ids: list[int] = []
        live_positions: list[int] = []
        pos = 0
        for segment in plan.segments[:-1]:
            n = len(segment.token_ids)
            if not segment.cached:
                live_ids += segment.token_ids
                live_positions += range(pos, pos + n)
                stats.prefilled_tokens += n
            else:
                entry = self.states(segment, prefix, stats, load_prefix, alternates)
                live = 0 if segment.is_prefix else min(recompute_tokens, n)
                if live:  # repair knob: the first tokens are recomputed and see everything before them
                    live_ids += segment.token_ids[:live]
                    live_positions += range(pos, pos + live)
                    stats.prefilled_tokens += live
                if n > live:
                    k, v = self._stored_part(entry, live, pos + live)
                    for i in range(layers):
                        keys[i].append(k[i])
                        values[i].append(v[i])
                    stored_positions.append(torch.arange(pos + live, pos + n))
                stats.reused_tokens += n - live
                stats.documents.append({"tokens": n, "position": pos, "recomputed": live})
            pos += n
        cache = DynamicCache(config=self.body.config)
        if stored_positions:
            for i in range(layers):
                cache.update(torch.cat(keys[i], dim=1)[None], torch.cat(values[i], dim=1)[None], i)
        if live_ids:
            cached = torch.cat(stored_positions) if stored_positions else torch.zeros(0, dtype=torch.long)
            self._forward_live(live_ids, live_positions, cache, cached)
        stats.prefilled_tokens += len(plan.segments[-1].token_ids)
        stats.build_s = time.perf_counter() - start
        return cache, stats
