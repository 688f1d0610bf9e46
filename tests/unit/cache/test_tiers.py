"""One contract every cache tier meets, plus memory-LRU and tiered-store behaviour."""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from egtlm_core.cache import CacheTier, DiskTier, KVEntry, MemoryTier, RedisTier, TieredStore

TIER_KINDS = ["memory", "disk", "disk_int8", "disk_budget", "tiered", "redis", "redis_int8", "tiered_redis"]


def build_tier(kind: str, directory: Path, redis_url: str | None = None) -> CacheTier:
    if "redis" in kind:
        redis = RedisTier(redis_url, int8=kind == "redis_int8", prefix=f"test:{uuid.uuid4().hex}:")
        return redis if kind.startswith("redis") else TieredStore([MemoryTier(max_bytes=1 << 26), redis])
    if kind == "memory":
        return MemoryTier(max_bytes=64 * 1024 * 1024)
    if kind == "disk":
        return DiskTier(directory)
    if kind == "disk_int8":
        return DiskTier(directory, int8=True)
    if kind == "disk_budget":
        return DiskTier(directory, max_bytes=64 * 1024 * 1024)
    return TieredStore([MemoryTier(max_bytes=64 * 1024 * 1024), DiskTier(directory)])


@pytest.fixture(params=TIER_KINDS)
def tier(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[CacheTier]:
    url = request.getfixturevalue("redis_url") if "redis" in request.param else None
    with build_tier(request.param, tmp_path / "kv", url) as t:
        yield t


def is_int8(tier: CacheTier) -> bool:
    return isinstance(tier, (DiskTier, RedisTier)) and tier.int8


# --- the contract, run against every tier -------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_round_trip(tier, make_key, make_entry, check_entries, dtype):
    key, entry = make_key("a"), make_entry(seq=7, dtype=dtype)
    tier.put(key, entry)
    got = tier.get(key)
    assert got is not None
    check_entries(got, entry, int8=is_int8(tier))


def test_contains_and_remove(tier, make_key, make_entry):
    key = make_key("a")
    assert not tier.contains(key)
    tier.put(key, make_entry())
    assert tier.contains(key)
    assert tier.remove(key) is True
    assert not tier.contains(key)
    assert tier.get(key) is None
    assert tier.remove(key) is False


def test_stats_count_misses_hits_and_puts(tier, make_key, make_entry):
    key = make_key("a")
    assert tier.get(key) is None
    tier.put(key, make_entry())
    assert tier.get(key) is not None
    stats = tier.stats
    assert (stats.misses, stats.hits, stats.puts, stats.corrupt) == (1, 1, 1, 0)
    assert stats.load_seconds > 0
    assert stats.bytes > 0


def test_batched_methods(tier, make_key, make_entry, check_entries):
    keys = [make_key(f"d{i}") for i in range(3)]
    entries = [make_entry(seed=i) for i in range(3)]
    tier.put_many(zip(keys, entries, strict=True))
    missing = make_key("missing")
    assert tier.contains_many([keys[0], missing, keys[2]]) == [True, False, True]
    got = tier.get_many([keys[0], missing, keys[2]])
    assert got[1] is None
    check_entries(got[0], entries[0], int8=is_int8(tier))
    check_entries(got[2], entries[2], int8=is_int8(tier))


def test_stored_entry_is_not_aliased_to_callers_tensors(tier, make_key, make_entry, check_entries):
    key, entry = make_key("a"), make_entry()
    snapshot = entry.clone()
    tier.put(key, entry)
    entry.keys[0].fill_(123.0)
    entry.values[1].zero_()
    entry.token_ids[0] = -1
    entry.meta["source"] = "changed"
    check_entries(tier.get(key), snapshot, int8=is_int8(tier))


def test_put_rejects_an_inconsistent_entry(tier, make_key, make_entry):
    bad = make_entry(seq=4)
    bad.token_ids = bad.token_ids[:3]
    with pytest.raises(ValueError, match="positions"):
        tier.put(make_key("a"), bad)
    assert not tier.contains(make_key("a"))


def test_concurrent_puts_and_gets(tier, make_key, make_entry, check_entries):
    def work(worker: int) -> list[tuple[KVEntry | None, KVEntry]]:
        results = []
        for i in range(6):
            key, entry = make_key(f"w{worker}-{i}"), make_entry(seed=worker * 100 + i)
            tier.put(key, entry)
            results.append((tier.get(key), entry))
        return results

    with ThreadPoolExecutor(max_workers=8) as pool:
        outcomes = [pair for batch in pool.map(work, range(8)) for pair in batch]
    assert len(outcomes) == 48
    for got, want in outcomes:
        assert got is not None
        check_entries(got, want, int8=is_int8(tier))
    assert tier.stats.hits == 48


# --- memory tier: LRU within a byte budget ------------------------------------------------------


def test_lru_evicts_least_recently_used_within_budget(make_key, make_entry):
    size = make_entry().nbytes
    tier = MemoryTier(max_bytes=3 * size)
    a, b, c, d = (make_key(t) for t in "abcd")
    for key in (a, b, c):
        tier.put(key, make_entry())
    assert tier.get(a) is not None  # a is now more recent than b
    tier.put(d, make_entry())
    assert [tier.contains(k) for k in (a, b, c, d)] == [True, False, True, True]
    assert tier.stats.evictions == 1
    assert tier.stats.bytes == 3 * size <= tier.max_bytes


def test_eviction_frees_enough_for_a_large_entry(make_key, make_entry):
    small = make_entry(seq=2)
    tier = MemoryTier(max_bytes=6 * small.nbytes)
    for i in range(6):
        tier.put(make_key(f"s{i}"), small)
    big = make_entry(seq=5)  # 2.5 small entries
    tier.put(make_key("big"), big)
    assert tier.contains(make_key("big"))
    assert tier.stats.evictions == 3
    assert tier.stats.bytes == 3 * small.nbytes + big.nbytes <= tier.max_bytes


def test_entry_over_budget_is_not_stored(make_key, make_entry, caplog):
    entry = make_entry()
    tier = MemoryTier(max_bytes=entry.nbytes - 1)
    with caplog.at_level(logging.WARNING, logger="egtlm_core.cache.tiers"):
        tier.put(make_key("a"), entry)
    assert "exceeds the budget" in caplog.text
    assert not tier.contains(make_key("a"))
    assert tier.stats.bytes == 0 and tier.stats.puts == 0


def test_putting_a_key_again_replaces_it(make_key, make_entry, check_entries):
    tier = MemoryTier(max_bytes=1 << 20)
    tier.put(make_key("a"), make_entry(seed=1))
    tier.put(make_key("a"), make_entry(seed=2))
    assert len(tier) == 1
    assert tier.stats.bytes == make_entry().nbytes
    check_entries(tier.get(make_key("a")), make_entry(seed=2))


@pytest.mark.parametrize("bad", [0, -5, 1.5, True])
def test_memory_budget_is_validated(bad):
    with pytest.raises(ValueError, match="max_bytes"):
        MemoryTier(max_bytes=bad)


# --- disk tier: least recently used files deleted past a byte budget ---------------------------


def _age(tier: DiskTier, key, seconds_ago: float) -> None:
    """Set a file's mtime explicitly: file-system clocks are too coarse to order quick writes."""
    t = time.time() - seconds_ago
    os.utime(tier.path_for(key), (t, t))


def test_disk_budget_deletes_least_recently_used_files(tmp_path, make_key, make_entry):
    probe = DiskTier(tmp_path / "probe")
    probe.put(make_key("x"), make_entry())
    size = probe.stats.bytes
    tier = DiskTier(tmp_path / "kv", max_bytes=int(3.5 * size))
    a, b, c, d = (make_key(t) for t in "abcd")
    for age, key in ((40, a), (30, b), (20, c)):
        tier.put(key, make_entry())
        _age(tier, key, age)
    assert tier.get(a) is not None  # a hit makes a the most recently used
    tier.put(d, make_entry())  # 4 files > 3.5: the oldest (b) goes; 3 files are within 90%
    assert [tier.contains(k) for k in (a, b, c, d)] == [True, False, True, True]
    assert tier.stats.evictions == 1
    assert tier.stats.bytes == 3 * size <= 0.9 * tier.max_bytes


def test_disk_budget_counts_files_already_there(tmp_path, make_key, make_entry):
    first = DiskTier(tmp_path / "kv")
    for i in range(4):
        first.put(make_key(f"k{i}"), make_entry())
        _age(first, make_key(f"k{i}"), 100 - i)
    size = first.stats.bytes // 4
    later = DiskTier(tmp_path / "kv", max_bytes=4 * size + size // 2)  # e.g. another process
    later.put(make_key("new"), make_entry())
    assert later.contains(make_key("new")) and not later.contains(make_key("k0"))
    assert later.stats.bytes <= later.max_bytes


def test_disk_entry_over_budget_is_not_stored(tmp_path, make_key, make_entry, caplog):
    tier = DiskTier(tmp_path / "kv", max_bytes=100)
    with caplog.at_level(logging.WARNING, logger="egtlm_core.cache.disk"):
        tier.put(make_key("a"), make_entry())
    assert "exceeds the budget" in caplog.text
    assert not tier.contains(make_key("a")) and tier.stats.puts == 0


@pytest.mark.parametrize("bad", [0, -5, 1.5, True])
def test_disk_budget_is_validated(tmp_path, bad):
    with pytest.raises(ValueError, match="max_bytes"):
        DiskTier(tmp_path / "kv", max_bytes=bad)


# --- tiered store -------------------------------------------------------------------------------


def test_tiered_store_promotes_a_disk_hit_into_memory(tmp_path, make_key, make_entry, check_entries):
    memory, disk = MemoryTier(max_bytes=1 << 20), DiskTier(tmp_path)
    store = TieredStore([memory, disk])
    key, entry = make_key("a"), make_entry()
    disk.put(key, entry)  # e.g. written by an earlier process
    assert not memory.contains(key)
    check_entries(store.get(key), entry)
    assert memory.contains(key)
    check_entries(store.get(key), entry)
    assert disk.stats.hits == 1  # the second get was served by memory
    assert memory.stats.hits == 1
    assert store.stats.hits == 2 and store.stats.misses == 0


def test_tiered_store_writes_through_and_removes_everywhere(tmp_path, make_key, make_entry):
    memory, disk = MemoryTier(max_bytes=1 << 20), DiskTier(tmp_path)
    store = TieredStore([memory, disk])
    key = make_key("a")
    store.put(key, make_entry())
    assert memory.contains(key) and disk.contains(key)
    memory.remove(key)
    assert store.contains(key)
    assert store.remove(key) is True
    assert not memory.contains(key) and not disk.contains(key)
    assert store.tiers == (memory, disk)


def test_tiered_store_aggregates_tier_counters(tmp_path, make_key, make_entry):
    disk = DiskTier(tmp_path)
    store = TieredStore([MemoryTier(max_bytes=1 << 20), disk])
    key = make_key("a")
    disk.put(key, make_entry())
    disk.path_for(key).write_bytes(b"garbage")
    assert store.get(key) is None
    stats = store.stats
    assert stats.corrupt == 1 and stats.misses == 1
    store.put(key, make_entry())
    assert store.stats.bytes == sum(t.stats.bytes for t in store.tiers)


def test_tiered_store_needs_a_tier():
    with pytest.raises(ValueError, match="at least one tier"):
        TieredStore([])
