"""`DiskTier`: one safetensors file per entry, written atomically, checked on read, LRU under a byte budget.

A truncated, bit-flipped, stale or foreign file is counted as corrupt, deleted and reported as a miss,
so the caller recomputes; it is never served.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time
from pathlib import Path

from .codec import decode_entry, encode_entry
from .entry import CacheKey, KVEntry
from .tiers import CacheStats, CacheTier, _check_budget

logger = logging.getLogger(__name__)

SUFFIX = ".safetensors"


class DiskTier(CacheTier):
    """One safetensors file per entry in `directory`, written atomically and checksummed.

    A file that is unreadable, truncated, fails its checksum, was written for another key (stale) or
    by another format version is logged, counted in `stats.corrupt`, deleted, and reported as a miss,
    so the caller recomputes instead of crashing or using wrong states. See `codec` for the format.

    Args:
        directory: Where the files live (created if missing). Several processes may share it.
        int8: Store keys/values as int8 with per-channel scales (about half of fp16); `get`
            dequantizes to the dtype the entry was put with. Files of either kind are readable.
        max_bytes: Budget for the entry files (None: unbounded). Over it, the least recently used
            files (a hit refreshes a file's mtime) are deleted down to 90% of the budget; an entry
            larger than the budget is not stored. Other processes sharing the directory count too.
        name: Label used in logs and reprs.
    """

    name = "disk"

    def __init__(
        self,
        directory: str | os.PathLike[str],
        int8: bool = False,
        max_bytes: int | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(name)
        _check_budget(max_bytes, allow_none=True)
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.int8 = int8
        self.max_bytes = max_bytes
        # Bytes written since the directory was last measured; a scan happens only when the
        # measured size plus these could pass the budget.
        self._measured = self._entry_bytes() if max_bytes is not None else 0

    def path_for(self, key: CacheKey) -> Path:
        return self.directory / f"{key.to_string()}{SUFFIX}"

    @property
    def storage(self) -> str:
        return "int8" if self.int8 else "native"

    def contains(self, key: CacheKey) -> bool:
        return self.path_for(key).is_file()

    def get(self, key: CacheKey) -> KVEntry | None:
        start = time.perf_counter()
        path = self.path_for(key)
        try:
            entry = decode_entry(key, path.read_bytes())
        except FileNotFoundError:
            self._count(misses=1)
            return None
        except Exception as exc:  # any failure to read back means: recompute, never crash
            logger.warning("%s: dropping bad cache file %s: %s", self.name, path.name, exc)
            self._count(misses=1, corrupt=1)
            _unlink(path)
            return None
        self._count(hits=1, load_seconds=time.perf_counter() - start)
        if self.max_bytes is not None:
            with contextlib.suppress(OSError):  # recency for the eviction order; best effort
                os.utime(path)
        return entry

    def put(self, key: CacheKey, entry: KVEntry) -> None:
        """Write `entry` atomically (temp file, fsync, rename); I/O failures are logged, not raised.

        Raises:
            ValueError: if `entry` is inconsistent (see `KVEntry.validate`) or holds inf/nan in int8 mode.
        """
        data = encode_entry(key, entry, int8=self.int8)
        path = self.path_for(key)
        if self.max_bytes is not None and len(data) > self.max_bytes:
            logger.warning(
                "%s: entry of %d bytes exceeds the budget of %d; not stored.",
                self.name,
                len(data),
                self.max_bytes,
            )
            return
        tmp = None
        try:
            fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=f".{path.stem[:16]}-", suffix=".tmp")
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)  # readers see the old file or the new one, never a partial one
        except OSError as exc:  # a full or read-only disk must not break answering
            logger.warning("%s: could not write %s: %s", self.name, path.name, exc)
            if tmp is not None:
                _unlink(Path(tmp))
            return
        self._count(puts=1)
        if self.max_bytes is not None:
            self._enforce_budget(len(data))

    def _entry_files(self) -> list[Path]:
        return list(self.directory.glob(f"*{SUFFIX}"))

    def _entry_bytes(self) -> int:
        return sum(_file_size(p) for p in self._entry_files())

    def _enforce_budget(self, written: int) -> None:
        """Delete least recently used files until the directory is within 90% of the budget."""
        assert self.max_bytes is not None
        with self._lock:
            self._measured += written
            if self._measured <= self.max_bytes:
                return
            files = []
            for p in self._entry_files():
                with contextlib.suppress(OSError):  # gone meanwhile (another process evicted it)
                    st = p.stat()
                    files.append((st.st_mtime_ns, st.st_size, p))
            total = sum(size for _, size, _ in files)
            evicted = 0
            for _, size, p in sorted(files, key=lambda f: f[0]):
                if total <= self.max_bytes * 0.9:
                    break
                if _unlink(p):
                    evicted += 1
                total -= size
            self._measured = total
        if evicted:
            self._count(evictions=evicted)

    def remove(self, key: CacheKey) -> bool:
        return _unlink(self.path_for(key))

    def close(self) -> None:
        """Nothing to release: every operation opens and closes its own file."""

    @property
    def stats(self) -> CacheStats:
        """Counters of this tier; `bytes` is the current size of the directory's entry files."""
        snapshot = super().stats
        snapshot.bytes = self._entry_bytes()
        return snapshot

    def __repr__(self) -> str:
        return (
            f"DiskTier({str(self.directory)!r}, int8={self.int8}, max_bytes={self.max_bytes}, "
            f"name={self.name!r})"
        )


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:  # deleted by another thread or process meanwhile
        return 0


def _unlink(path: Path) -> bool:
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    except OSError as exc:
        logger.warning("Could not delete %s: %s", path, exc)
        return False
    return True
