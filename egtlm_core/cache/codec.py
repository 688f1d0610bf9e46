"""The on-disk format of one `KVEntry`: safetensors bytes whose metadata makes them self-checking.

The metadata carries the full key, so a file renamed or copied under another key's name is caught
(stale), a format version, the entry's dtype and storage ("native" or "int8"), and a sha256 over the
other metadata and every tensor's bytes, so truncation or a flipped bit anywhere is caught before
any state reaches a model. `decode_entry` raises `CorruptEntryError` (or whatever the parser
raises); the disk tier turns any of them into a miss.

Tensor names: "token_ids", "k.{layer}", "v.{layer}", and for int8 "k_scale.{layer}", "v_scale.{layer}".
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import fields

import safetensors.torch
import torch

from .entry import CacheKey, KVEntry
from .quantize import dequantize_int8, quantize_int8

FORMAT = "egtlm-kv"
FORMAT_VERSION = "1"
_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_DTYPES = {str(d).removeprefix("torch."): d for d in _FLOATS}
_KEY_FIELDS = tuple(f.name for f in fields(CacheKey))


class CorruptEntryError(Exception):
    """Stored bytes that must not be used; the message says why."""


def encode_entry(key: CacheKey, entry: KVEntry, int8: bool = False) -> bytes:
    """Serialise `entry` (validated first) for `key`; with `int8`, keys/values are quantized."""
    entry.validate()
    tensors = {"token_ids": entry.token_ids.detach().cpu().contiguous()}
    for i, (k, v) in enumerate(zip(entry.keys, entry.values, strict=True)):
        for kind, t in (("k", k), ("v", v)):
            t = t.detach().cpu()
            if int8:
                tensors[f"{kind}.{i}"], tensors[f"{kind}_scale.{i}"] = quantize_int8(t)
            else:
                tensors[f"{kind}.{i}"] = t.contiguous()
    metadata = {f"key.{name}": value for name, value in key.to_dict().items()}
    metadata.update(
        format=FORMAT,
        version=FORMAT_VERSION,
        storage="int8" if int8 else "native",
        dtype=str(entry.dtype).removeprefix("torch."),
        num_tokens=str(entry.num_tokens),
        num_layers=str(entry.num_layers),
        position_offset=str(entry.position_offset),
        meta=json.dumps(entry.meta, sort_keys=True),
    )
    metadata["checksum"] = _checksum(tensors, metadata)
    return safetensors.torch.save(tensors, metadata=metadata)


def decode_entry(key: CacheKey, data: bytes) -> KVEntry:
    """Rebuild the entry stored in `data`, checking it was written for `key` and is intact.

    Raises:
        CorruptEntryError: wrong format/version, another key's file, checksum or size mismatch.
            Malformed bytes may also raise the parser's own errors; callers treat any as corrupt.
    """
    meta = read_metadata(data)
    if meta.get("format") != FORMAT or meta.get("version") != FORMAT_VERSION:
        raise CorruptEntryError(
            f"format {meta.get('format')!r} version {meta.get('version')!r}, "
            f"expected {FORMAT!r} version {FORMAT_VERSION!r}"
        )
    if {name: meta.get(f"key.{name}") for name in _KEY_FIELDS} != key.to_dict():
        raise CorruptEntryError("stale: written for another key")
    tensors = safetensors.torch.load(data)
    checksum = meta.pop("checksum", None)
    if checksum != _checksum(tensors, meta):
        raise CorruptEntryError("checksum mismatch")
    dtype = _DTYPES[meta["dtype"]]
    layers = range(int(meta["num_layers"]))
    if meta["storage"] == "int8":
        keys = [dequantize_int8(tensors[f"k.{i}"], tensors[f"k_scale.{i}"], dtype) for i in layers]
        values = [dequantize_int8(tensors[f"v.{i}"], tensors[f"v_scale.{i}"], dtype) for i in layers]
    elif meta["storage"] == "native":
        keys = [tensors[f"k.{i}"] for i in layers]
        values = [tensors[f"v.{i}"] for i in layers]
    else:
        raise CorruptEntryError(f"unknown storage {meta['storage']!r}")
    offset, extra = int(meta["position_offset"]), json.loads(meta["meta"])
    entry = KVEntry(keys, values, tensors["token_ids"], offset, extra)
    entry.validate()
    if entry.num_tokens != int(meta["num_tokens"]) or entry.dtype != dtype:
        raise CorruptEntryError("tensors disagree with the metadata")
    return entry


def read_metadata(data: bytes) -> dict[str, str]:
    """The `__metadata__` dict of safetensors bytes (8-byte little-endian length, then JSON header)."""
    if len(data) < 8:
        raise CorruptEntryError(f"{len(data)} bytes is too short for a safetensors file")
    size = int.from_bytes(data[:8], "little")
    if size > len(data) - 8:
        raise CorruptEntryError(f"header claims {size} bytes but only {len(data) - 8} follow")
    meta = json.loads(data[8 : 8 + size]).get("__metadata__")
    if not isinstance(meta, dict):
        raise CorruptEntryError("no metadata")
    return meta


def _checksum(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> str:
    """sha256 over the metadata (so an altered offset is caught too) and every tensor's bytes."""
    h = hashlib.sha256(json.dumps(metadata, sort_keys=True).encode("utf-8"))
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        h.update(f"\0{name}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
