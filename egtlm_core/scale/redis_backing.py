"""One Redis behind many processes: the KV states and the document index every replica shares.

`redis_backing(url, model)` gives the `EgtLM` arguments of one such process: 1 GiB of RAM in front of
a `RedisTier` for states, and a `SharedDocumentIndex` on a stream named after the model's weights, so
servers of different models on one Redis never mix documents (the tier's keys already name the
model). `egtlm serve --redis`, `--replicas` and `egtlm index/ask --redis` build theirs here.
"""

from __future__ import annotations

import os
from typing import Any

from ..cache.redis_tier import check_redis_url

RAM_BYTES = 1 << 30  # the RAM tier in front of Redis, per process


def shared_state_store(url: str, ram_bytes: int = RAM_BYTES) -> Any:
    """RAM in front of the Redis every process reaches: a state one process captured, all reuse."""
    from ..cache import MemoryTier, RedisTier, TieredStore

    return TieredStore([MemoryTier(ram_bytes), RedisTier(check_redis_url(url))])


def documents_stream(model: str | os.PathLike | None, weights: str = "native") -> str:
    """The document index's stream for a model: named after its weights' fingerprint (int8 weights
    embed slightly differently, so they get their own)."""
    from ..loading.sources import resolve_source
    from ..modeling.int8_weights import weights_fingerprint

    return f"egtlm:documents:{weights_fingerprint(resolve_source(model).fingerprint(), weights)}"


def redis_backing(url: str, model: str | os.PathLike | None, weights: str = "native") -> dict[str, Any]:
    """`EgtLM(model, weights=weights, **redis_backing(url, model, weights))`: states and documents
    shared through `url`."""
    from ..rag.shared_index import SharedDocumentIndex

    stream = documents_stream(model, weights)
    return {
        "cache_store": shared_state_store(url),
        "document_index": SharedDocumentIndex(check_redis_url(url), stream=stream),
    }
