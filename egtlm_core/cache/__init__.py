"""KV cache store: keys, entries, int8 storage, and memory / disk / Redis / tiered tiers."""

from __future__ import annotations

from .disk import DiskTier
from .entry import CAPTURES, CacheKey, KVEntry, sha256_text
from .quantize import dequantize_int8, quantize_int8
from .redis_tier import RedisTier
from .tiers import CacheStats, CacheTier, MemoryTier, TieredStore

__all__ = [
    "CAPTURES",
    "CacheKey",
    "CacheStats",
    "CacheTier",
    "DiskTier",
    "KVEntry",
    "MemoryTier",
    "RedisTier",
    "TieredStore",
    "dequantize_int8",
    "quantize_int8",
    "sha256_text",
]
