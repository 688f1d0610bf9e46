"""`index_collection_on_ray`: fill a Chroma collection (local or a `chroma run` server) on Ray Data.

The actors of `egtlm_core.scale.index_on_ray` embed and capture the documents (states to the shared
Redis tier); their vectors are upserted into the collection batch by batch, as they come back. The
model and settings are the collection's own `EgtLMEmbeddingFunction`'s, so what the actors write is
what the collection would embed itself, and ids the collection already holds are skipped: a stopped
run resumes where it was.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from egtlm_core.adapter_kit import RayIndexOptions, index_on_ray

from .embedding_function import EgtLMEmbeddingFunction

GET_CHUNK = 1000  # ids per `collection.get` when looking for documents already stored


def index_collection_on_ray(
    collection: Any,
    documents: Sequence[Mapping[str, Any]],
    *,
    redis_url: str | None = None,
    actors: int = 2,
    batch_size: int = 16,
    threads: int = 1,
    address: str | None = None,
) -> int:
    """Embed `documents` ({"id", "text", "metadata"?}) on Ray and upsert them into `collection`
    (made with an `EgtLMEmbeddingFunction`); -> how many were added (ids already there are skipped).

    Example:
        >>> docs = client.get_or_create_collection("docs", embedding_function=EgtLMEmbeddingFunction())
        >>> index_collection_on_ray(docs, rows, redis_url="redis://127.0.0.1:6379/0", actors=16)
    """
    function = collection._embedding_function  # Chroma keeps the collection's function here
    if not isinstance(function, EgtLMEmbeddingFunction):
        raise ValueError(
            "The collection's embedding function is not an EgtLMEmbeddingFunction, so vectors egtlm's "
            f"actors compute would not match what it embeds queries with (it has {function!r})."
        )
    config = function.get_config()
    settings = {"mode": config["mode"], **config["model_kwargs"], **function.settings}
    options = RayIndexOptions(
        model=config["model"], settings=settings, redis_url=redis_url, actors=actors,
        batch_size=batch_size, threads=threads,
    )  # fmt: skip
    done = _stored_ids(collection, [str(d.get("id")) for d in documents])
    added = 0
    for batch in index_on_ray(documents, options, done=done, address=address):
        collection.upsert(
            ids=batch.ids,
            embeddings=_matryoshka(batch.vectors, config["dimensions"]),
            documents=batch.texts,
            metadatas=[m or None for m in batch.metadatas] if any(batch.metadatas) else None,
        )
        added += len(batch.ids)
    return added


def _stored_ids(collection: Any, ids: Iterable[str]) -> set[str]:
    wanted = list(dict.fromkeys(ids))
    found: set[str] = set()
    for start in range(0, len(wanted), GET_CHUNK):
        found.update(collection.get(ids=wanted[start : start + GET_CHUNK], include=[])["ids"])
    return found


def _matryoshka(vectors: np.ndarray, dimensions: int | None) -> np.ndarray:
    """The leading `dimensions` components, re-normalised: what `encode(dim=...)` returns."""
    if dimensions is None:
        return vectors
    head = vectors[:, :dimensions]
    return head / np.linalg.norm(head, axis=1, keepdims=True).clip(min=1e-12)
