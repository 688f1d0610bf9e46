"""`RedisTier`: KV states in a Redis server many processes and machines reach (the shared tier).

Each entry is one Redis string: the same self-checking bytes a `DiskTier` file holds (`codec`: the
full key, format version, storage and a sha256 over everything), under `prefix + key.to_string()`.
The cache key already names the model fingerprint, attention kernel and storage format, so servers
of different models or int8/native settings can share one Redis without mixing entries.

Failures never reach an answer: a value that fails its checks is deleted and reported as a miss
(the caller recomputes); a Redis that is down or times out makes `get` a miss and `put` a no-op,
with one warning per outage and another when it is back. The byte budget is Redis's own
(`maxmemory` with an LRU `maxmemory-policy`); an optional `ttl_s` expires entries.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from .codec import decode_entry, encode_entry
from .entry import CacheKey, KVEntry
from .tiers import CacheStats, CacheTier

logger = logging.getLogger(__name__)

DEFAULT_PREFIX = "egtlm:kv:"


def check_redis_url(url: Any) -> str:
    """A Redis url as `redis.Redis.from_url` takes it, checked before anything connects."""
    if not isinstance(url, str) or not url.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError(f"A Redis url looks like redis://host:6379/0, got {url!r}.")
    return url


class RedisTier(CacheTier):
    """Entries in Redis, checksummed like the disk tier's files; a Redis outage degrades to misses.

    Args:
        url: `redis://host:port/db` (see `redis.Redis.from_url`), or pass `client`.
        client: an existing `redis.Redis` (bytes responses, i.e. `decode_responses=False`).
        int8: store keys/values as int8 with per-channel scales (about half of fp16).
        prefix: namespace of this tier's keys in the Redis database.
        ttl_s: seconds an entry lives after its last write (None: until Redis evicts it).
        timeout_s: socket timeout of each command; a slower Redis counts as unavailable.
        name: label used in logs and reprs.

    Example:
        >>> store = TieredStore([MemoryTier(), RedisTier("redis://127.0.0.1:6379/0")])
        >>> m = EgtLM(cache_store=store)
    """

    name = "redis"

    def __init__(
        self,
        url: str | None = "redis://127.0.0.1:6379/0",
        *,
        client: Any = None,
        int8: bool = False,
        prefix: str = DEFAULT_PREFIX,
        ttl_s: int | None = None,
        timeout_s: float = 2.0,
        name: str | None = None,
    ) -> None:
        super().__init__(name)
        try:
            import redis
        except ImportError as e:
            raise ImportError("RedisTier needs the redis client: pip install 'egtlm[redis]'") from e
        if ttl_s is not None and (not isinstance(ttl_s, int) or isinstance(ttl_s, bool) or ttl_s < 1):
            raise ValueError(f"ttl_s must be a positive number of seconds or None, got {ttl_s!r}.")
        if client is None:
            if not url:
                raise ValueError("Pass a Redis url (redis://host:port/db) or a redis.Redis client.")
            client = redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
        self.client = client
        self.int8 = int8
        self.prefix = prefix
        self.ttl_s = ttl_s
        self._unavailable = (redis.ConnectionError, redis.TimeoutError)
        self._down_since: float | None = None
        self._down_lock = threading.Lock()

    @property
    def storage(self) -> str:
        return "int8" if self.int8 else "native"

    def _name(self, key: CacheKey) -> str:
        return self.prefix + key.to_string()

    def _call(self, what: str, fallback: Any, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Run one Redis command; while Redis is unreachable, `fallback` (warned once per outage)."""
        try:
            result = fn(*args, **kwargs)
        except self._unavailable as exc:
            with self._down_lock:
                first = self._down_since is None
                self._down_since = self._down_since or time.monotonic()
            if first:
                logger.warning(
                    "%s: Redis unavailable (%s while %s); recomputing states.", self.name, exc, what
                )
            return fallback
        if self._down_since is not None:
            with self._down_lock:
                since, self._down_since = self._down_since, None
            if since is not None:
                logger.warning("%s: Redis is back after %.1f s.", self.name, time.monotonic() - since)
        return result

    def contains(self, key: CacheKey) -> bool:
        return bool(self._call("checking a key", 0, self.client.exists, self._name(key)))

    def get(self, key: CacheKey) -> KVEntry | None:
        start = time.perf_counter()
        data = self._call("reading", None, self.client.get, self._name(key))
        if data is None:
            self._count(misses=1)
            return None
        try:
            entry = decode_entry(key, bytes(data))
        except Exception as exc:  # any failure to read back means: recompute, never serve it
            logger.warning("%s: dropping a bad value for %s: %s", self.name, key.to_string()[:24], exc)
            self._count(misses=1, corrupt=1)
            self._call("deleting a bad value", 0, self.client.delete, self._name(key))
            return None
        self._count(hits=1, load_seconds=time.perf_counter() - start)
        return entry

    def put(self, key: CacheKey, entry: KVEntry) -> None:
        """Store `entry` (validated and checksummed first); an unreachable Redis skips it.

        Raises:
            ValueError: if `entry` is inconsistent (see `KVEntry.validate`) or holds inf/nan in int8 mode.
        """
        data = encode_entry(key, entry, int8=self.int8)
        if self._call("writing", False, self.client.set, self._name(key), data, ex=self.ttl_s):
            self._count(puts=1)

    def remove(self, key: CacheKey) -> bool:
        return bool(self._call("deleting", 0, self.client.delete, self._name(key)))

    def close(self) -> None:
        self.client.close()

    @property
    def stats(self) -> CacheStats:
        """Counters of this tier; `bytes` is the size of this prefix's values now (a SCAN: costs a
        round trip per 1,000 keys), 0 while Redis is unreachable."""
        snapshot = super().stats
        snapshot.bytes = int(self._call("measuring", 0, self._value_bytes))
        return snapshot

    def _value_bytes(self) -> int:
        names = list(self.client.scan_iter(match=self.prefix + "*", count=1000))
        if not names:
            return 0
        pipe = self.client.pipeline(transaction=False)
        for n in names:
            pipe.strlen(n)
        return sum(pipe.execute())

    def __repr__(self) -> str:
        return f"RedisTier(prefix={self.prefix!r}, int8={self.int8}, ttl_s={self.ttl_s}, name={self.name!r})"
