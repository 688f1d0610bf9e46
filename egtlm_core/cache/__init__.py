"""KV cache store: keys, entries, int8 storage, and memory / disk / tiered tiers."""

from __future__ import annotations

from .disk import DiskTier
from .entry import CAPTURES, CacheKey, KVEntry, sha256_text
from .quantize import dequantize_int8, quantize_int8
from .tiers import CacheStats, CacheTier, MemoryTier, TieredStore

__all__ = [
    "CAPTURES",
    "CacheKey",
    "CacheStats",
    "CacheTier",
    "DiskTier",
    "KVEntry",
    "MemoryTier",
    "TieredStore",
    "dequantize_int8",
    "quantize_int8",
    "sha256_text",
]
