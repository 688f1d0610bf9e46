"""Storage tiers for captured KV states: memory (LRU), disk (safetensors), and a tiered store.

The interface is deliberately small (contains / get / put / remove / close, with batched versions
that loop): LMCache's backend interface grew to ~18 methods and became hard to implement. A
`TieredStore` is itself a tier, so stores compose. Each tier guards its state with one lock, always
used with `with`.

Entries returned by `get` are shared and read-only by contract; copy them (`KVEntry.clone`) before
changing them. Tiers copy on `put`, so changing a tensor after storing it never changes the store.
"""

from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

from .entry import CacheKey, KVEntry

logger = logging.getLogger(__name__)


@dataclass
class CacheStats:
    """Counters of one tier (or, for a `TieredStore`, the store as a whole).

    Attributes:
        hits: `get` calls that returned an entry.
        misses: `get` calls that returned None (corrupt entries included).
        puts: Entries stored.
        evictions: Entries dropped to respect a byte budget.
        corrupt: Bad entries detected (and deleted) on read.
        bytes: Bytes currently held (memory: tensor bytes; disk: file sizes).
        load_seconds: Time spent in `get` calls that returned data.
    """

    hits: int = 0
    misses: int = 0
    puts: int = 0
    evictions: int = 0
    corrupt: int = 0
    bytes: int = 0
    load_seconds: float = 0.0


class CacheTier(ABC):
    """A place that maps `CacheKey` to `KVEntry`; `get` never raises for a bad stored entry."""

    name: str = "tier"

    def __init__(self, name: str | None = None) -> None:
        self._lock = threading.Lock()
        self._stats = CacheStats()
        if name is not None:
            self.name = name

    @property
    def storage(self) -> str:
        """How entries are kept: "native" (as put) or "int8"; part of every cache key."""
        return "native"

    @abstractmethod
    def contains(self, key: CacheKey) -> bool:
        """Whether an entry is stored (a later `get` may still miss if it is corrupt or evicted)."""

    @abstractmethod
    def get(self, key: CacheKey) -> KVEntry | None:
        """The entry (shared, read-only), or None on a miss; never raises for bad stored data."""

    @abstractmethod
    def put(self, key: CacheKey, entry: KVEntry) -> None:
        """Store a copy of `entry`; raises ValueError if it is inconsistent (`KVEntry.validate`)."""

    @abstractmethod
    def remove(self, key: CacheKey) -> bool:
        """Drop the entry; True if there was one."""

    @abstractmethod
    def close(self) -> None:
        """Release what the tier holds."""

    def get_many(self, keys: Iterable[CacheKey]) -> list[KVEntry | None]:
        return [self.get(key) for key in keys]

    def put_many(self, items: Iterable[tuple[CacheKey, KVEntry]]) -> None:
        for key, entry in items:
            self.put(key, entry)

    def contains_many(self, keys: Iterable[CacheKey]) -> list[bool]:
        return [self.contains(key) for key in keys]

    @property
    def stats(self) -> CacheStats:
        """A snapshot of the counters (changing it does not change the tier)."""
        with self._lock:
            return replace(self._stats)

    def _count(self, **deltas: float) -> None:
        with self._lock:
            for name, delta in deltas.items():
                setattr(self._stats, name, getattr(self._stats, name) + delta)

    def __enter__(self) -> CacheTier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


class MemoryTier(CacheTier):
    """Least-recently-used entries within a byte budget (`KVEntry.nbytes`).

    Entries stay on the device they were put from (a clone each); `get` returns the stored object.

    Args:
        max_bytes: Budget for keys + values; an entry larger than it is not stored.
        name: Label used in logs and reprs.
    """

    name = "memory"

    def __init__(self, max_bytes: int = 2 * 1024**3, name: str | None = None) -> None:
        _check_budget(max_bytes)
        super().__init__(name)
        self.max_bytes = max_bytes
        self._entries: OrderedDict[CacheKey, KVEntry] = OrderedDict()

    def contains(self, key: CacheKey) -> bool:
        with self._lock:
            return key in self._entries

    def get(self, key: CacheKey) -> KVEntry | None:
        start = time.perf_counter()
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                self._stats.misses += 1
                return None
            self._entries.move_to_end(key)
            self._stats.hits += 1
            self._stats.load_seconds += time.perf_counter() - start
            return entry

    def put(self, key: CacheKey, entry: KVEntry) -> None:
        entry.validate()
        size = entry.nbytes
        if size > self.max_bytes:
            logger.warning(
                "%s: entry of %d bytes exceeds the budget of %d; not stored.", self.name, size, self.max_bytes
            )
            self.remove(key)  # never leave an older value behind a put that did not land
            return
        own = entry.clone()  # outside the lock: copying is the slow part
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._stats.bytes -= old.nbytes
            self._entries[key] = own
            self._stats.bytes += size
            self._stats.puts += 1
            while self._stats.bytes > self.max_bytes:
                _, evicted = self._entries.popitem(last=False)
                self._stats.bytes -= evicted.nbytes
                self._stats.evictions += 1

    def remove(self, key: CacheKey) -> bool:
        with self._lock:
            old = self._entries.pop(key, None)
            if old is None:
                return False
            self._stats.bytes -= old.nbytes
            return True

    def close(self) -> None:
        with self._lock:
            self._entries.clear()
            self._stats.bytes = 0

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)


def _check_budget(max_bytes: object, allow_none: bool = False) -> None:
    if allow_none and max_bytes is None:
        return
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes <= 0:
        what = "a positive int or None" if allow_none else "a positive int"
        raise ValueError(f"max_bytes must be {what}, got {max_bytes!r}.")


class TieredStore(CacheTier):
    """Tiers in order, fastest first, e.g. `TieredStore([MemoryTier(), DiskTier(path)])`.

    `get` walks the tiers and copies a hit into every earlier tier; `put` writes through to all of
    them. The store's own `stats` count its gets and puts; evictions, corrupt and bytes are summed
    from the tiers, which stay reachable as `store.tiers` for their own counters.

    Example:
        >>> store = TieredStore([MemoryTier(max_bytes=1 << 30), DiskTier(cache_dir)])  # doctest: +SKIP
        >>> entry = store.get(key)  # memory, else disk (then copied into memory), else None  # doctest: +SKIP
    """

    name = "tiered"

    def __init__(self, tiers: Sequence[CacheTier], name: str | None = None) -> None:
        if not tiers:
            raise ValueError("TieredStore needs at least one tier.")
        super().__init__(name)
        self.tiers: tuple[CacheTier, ...] = tuple(tiers)

    @property
    def storage(self) -> str:
        """ "int8" when any tier quantizes: a hit may then come back dequantized."""
        return "int8" if any(tier.storage == "int8" for tier in self.tiers) else "native"

    def contains(self, key: CacheKey) -> bool:
        return any(tier.contains(key) for tier in self.tiers)

    def get(self, key: CacheKey) -> KVEntry | None:
        start = time.perf_counter()
        for i, tier in enumerate(self.tiers):
            entry = tier.get(key)
            if entry is not None:
                for faster in self.tiers[:i]:
                    faster.put(key, entry)
                self._count(hits=1, load_seconds=time.perf_counter() - start)
                return entry
        self._count(misses=1)
        return None

    def put(self, key: CacheKey, entry: KVEntry) -> None:
        entry.validate()
        for tier in self.tiers:
            tier.put(key, entry)
        self._count(puts=1)

    def remove(self, key: CacheKey) -> bool:
        removed = [tier.remove(key) for tier in self.tiers]  # not any(...): it would stop early
        return any(removed)

    def close(self) -> None:
        for tier in self.tiers:
            tier.close()

    @property
    def stats(self) -> CacheStats:
        snapshot = super().stats
        for tier in self.tiers:
            tier_stats = tier.stats
            snapshot.evictions += tier_stats.evictions
            snapshot.corrupt += tier_stats.corrupt
            snapshot.bytes += tier_stats.bytes
        return snapshot

    def __repr__(self) -> str:
        return f"TieredStore({list(self.tiers)!r})"
