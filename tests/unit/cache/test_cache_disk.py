"""Disk tier: file layout, atomic writes, every kind of bad file, and int8 size/accuracy."""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from safetensors import safe_open

from egtlm_core.cache import DiskTier, KVEntry, codec

SMOLLM2 = dict(layers=30, heads=3, head_dim=64)  # SmolLM2-135M KV shapes; fp16 = 23,040 bytes/token


def test_one_named_file_per_entry_with_its_key_in_metadata(tmp_path, make_key, make_entry):
    disk = DiskTier(tmp_path)
    key, entry = make_key("a"), make_entry(seq=6)
    disk.put(key, entry)
    assert [p.name for p in tmp_path.iterdir()] == [key.to_string() + ".safetensors"]
    with safe_open(str(disk.path_for(key)), "pt") as f:
        meta = f.metadata()
    assert {name: meta[f"key.{name}"] for name in key.to_dict()} == key.to_dict()
    assert meta["num_tokens"] == "6" and meta["num_layers"] == "2"
    assert meta["version"] == codec.FORMAT_VERSION and meta["storage"] == "native"
    assert meta["dtype"] == "float32" and len(meta["checksum"]) == 64
    assert disk.stats.bytes == disk.path_for(key).stat().st_size


def test_entries_persist_across_instances(tmp_path, make_key, make_entry, check_entries):
    DiskTier(tmp_path).put(make_key("a"), make_entry())
    check_entries(DiskTier(tmp_path).get(make_key("a")), make_entry())


def test_concurrent_writers_of_one_key_leave_a_valid_file(tmp_path, make_key, make_entry, check_entries):
    disk, key = DiskTier(tmp_path), make_key("a")
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda _: disk.put(key, make_entry(seq=50)), range(16)))
    check_entries(disk.get(key), make_entry(seq=50))
    assert disk.stats.corrupt == 0
    assert [p.suffix for p in tmp_path.iterdir()] == [".safetensors"]  # no temp files left


def test_write_failure_is_logged_not_raised(tmp_path, make_key, make_entry, monkeypatch, caplog):
    def fail(*args: object) -> None:
        raise OSError("disk full")

    disk = DiskTier(tmp_path)
    monkeypatch.setattr(os, "replace", fail)
    with caplog.at_level(logging.WARNING, logger="egtlm_core.cache.disk"):
        disk.put(make_key("a"), make_entry())
    assert "disk full" in caplog.text
    assert list(tmp_path.iterdir()) == []
    assert disk.stats.puts == 0


# --- bad files: each detected, counted, deleted, reported as a miss -----------------------------


def _truncate(disk: DiskTier, key, make_key, make_entry) -> None:
    path = disk.path_for(key)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _flip_tensor_byte(disk: DiskTier, key, make_key, make_entry) -> None:
    path = disk.path_for(key)
    data = bytearray(path.read_bytes())
    data_start = 8 + int.from_bytes(data[:8], "little")
    data[(data_start + len(data)) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def _garbage(disk: DiskTier, key, make_key, make_entry) -> None:
    disk.path_for(key).write_bytes(os.urandom(4096))


def _stale(disk: DiskTier, key, make_key, make_entry) -> None:
    other = make_key("another document")
    disk.put(other, make_entry(seed=9))
    os.replace(disk.path_for(other), disk.path_for(key))


def _wrong_version(disk: DiskTier, key, make_key, make_entry) -> None:
    original = codec.FORMAT_VERSION
    codec.FORMAT_VERSION = "0"
    try:
        disk.put(key, make_entry())
    finally:
        codec.FORMAT_VERSION = original


def _edited_metadata(disk: DiskTier, key, make_key, make_entry) -> None:
    """Rewrite the file with a changed offset but the original checksum."""
    from safetensors.torch import load_file, save_file

    path = disk.path_for(key)
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    tensors = load_file(str(path))
    meta["position_offset"] = str(int(meta["position_offset"]) + 1)
    save_file(tensors, str(path), metadata=meta)


@pytest.mark.parametrize(
    "damage", [_truncate, _flip_tensor_byte, _garbage, _stale, _wrong_version, _edited_metadata]
)
@pytest.mark.parametrize("int8", [False, True])
def test_bad_file_is_a_counted_miss_and_is_deleted(
    tmp_path, make_key, make_entry, check_entries, caplog, damage, int8
):
    disk, key = DiskTier(tmp_path, int8=int8), make_key("a")
    disk.put(key, make_entry())
    damage(disk, key, make_key, make_entry)
    assert disk.path_for(key).exists()
    with caplog.at_level(logging.WARNING, logger="egtlm_core.cache.disk"):
        assert disk.get(key) is None
    assert "dropping bad cache file" in caplog.text
    assert not disk.path_for(key).exists()
    stats = disk.stats
    assert (stats.corrupt, stats.misses, stats.hits) == (1, 1, 0)
    disk.put(key, make_entry())  # the caller recomputes and stores again
    check_entries(disk.get(key), make_entry(), int8=int8)


def test_a_missing_file_is_a_plain_miss(tmp_path, make_key):
    disk = DiskTier(tmp_path)
    assert disk.get(make_key("a")) is None
    assert (disk.stats.misses, disk.stats.corrupt) == (1, 0)


# --- int8 storage -------------------------------------------------------------------------------


def test_int8_and_native_files_read_back_in_either_mode(tmp_path, make_key, make_entry, check_entries):
    DiskTier(tmp_path, int8=False).put(make_key("native"), make_entry(seed=1))
    DiskTier(tmp_path, int8=True).put(make_key("int8"), make_entry(seed=2))
    check_entries(DiskTier(tmp_path, int8=True).get(make_key("native")), make_entry(seed=1))
    check_entries(DiskTier(tmp_path, int8=False).get(make_key("int8")), make_entry(seed=2), int8=True)


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_int8_smollm2_document_fits_12000_bytes_per_token(tmp_path, make_key, make_entry, dtype):
    entry = make_entry(seq=300, dtype=dtype, **SMOLLM2)
    int8_disk, native_disk = DiskTier(tmp_path / "q", int8=True), DiskTier(tmp_path / "n")
    int8_disk.put(make_key("a"), entry)
    native_disk.put(make_key("a"), entry)
    per_token = int8_disk.stats.bytes / 300  # whole file: int8 data, scales, token ids, header
    assert per_token <= 12_000
    if dtype == torch.float16:
        assert 23_040 <= native_disk.stats.bytes / 300 < 23_200


def test_int8_error_is_within_a_step_per_channel(tmp_path, make_key, make_entry):
    entry = make_entry(seq=300, **SMOLLM2)
    for t in entry.keys[:3]:
        t[:, :, 5] *= 40.0  # outlier channels, as real K caches have
    disk = DiskTier(tmp_path, int8=True)
    disk.put(make_key("a"), entry)
    got = disk.get(make_key("a"))
    assert got is not None and got.dtype == torch.float32
    for g, w in zip([*got.keys, *got.values], [*entry.keys, *entry.values], strict=True):
        channel_max = w.abs().amax(dim=-2, keepdim=True)
        assert bool(((g - w).abs() <= channel_max / 127 + 1e-6).all())
    # the outlier channel does not coarsen its neighbours: small channels stay accurate
    assert (got.keys[0][:, :, 0] - entry.keys[0][:, :, 0]).abs().max() < 0.05


def test_disk_returns_fresh_cpu_tensors(tmp_path, make_key, make_entry):
    disk = DiskTier(tmp_path)
    disk.put(make_key("a"), make_entry())
    first, second = disk.get(make_key("a")), disk.get(make_key("a"))
    assert isinstance(first, KVEntry) and first.keys[0].device.type == "cpu"
    first.keys[0].zero_()
    assert not torch.equal(first.keys[0], second.keys[0])
