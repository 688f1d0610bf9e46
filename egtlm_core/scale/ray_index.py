"""Indexing on Ray Data: many `EgtLM` actors embed documents and store their KV states in one pass.

Each actor holds one model and runs `DocumentCache.add` on its batches: vectors and states come out
of the same forward, the states go to the state tier every actor reaches (a `RedisTier`), and the
vectors come back to the caller, which writes them wherever its vector store is (the CLI's index
file, a Chroma collection through its adapter, ...). The core imports no vector store.

Resumable: documents whose ids the caller already holds are skipped before any work is planned.
A batch whose actor dies is retried on a restarted actor (Ray Data restarts pool actors and retries
their tasks by default); the other batches are kept.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class IndexedBatch:
    """One batch back from the actors: ids, texts, metadata and their unit vectors [n, dim]."""

    ids: list[str]
    texts: list[str]
    metadatas: list[dict[str, Any]]
    vectors: np.ndarray


@dataclass(frozen=True)
class RayIndexOptions:
    """How `index_on_ray` runs.

    Args:
        model: what each actor loads (`EgtLM(model)`; None: the packaged default).
        settings: `EgtLM` keyword arguments for every actor (dtype, EgtLMConfig fields).
        redis_url: the state tier every actor writes to (None: each actor's default store, which
            only that machine's processes can read: fine on one machine, not across a cluster).
        redis_prefix: the key namespace in Redis (`RedisTier`'s).
        actors: actors in the pool (one model each).
        batch_size: documents per actor call.
        threads: torch threads (and Ray CPUs) per actor.
    """

    model: str | None = None
    settings: Mapping[str, Any] = field(default_factory=dict)
    redis_url: str | None = None
    redis_prefix: str = "egtlm:kv:"
    actors: int = 2
    batch_size: int = 16
    threads: int = 1

    def __post_init__(self) -> None:
        for name in ("actors", "batch_size", "threads"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}.")


class DocumentIndexer:
    """The Ray Data actor: one `EgtLM` (with the shared state tier) per actor process."""

    def __init__(self, options: RayIndexOptions) -> None:
        import torch

        from ..cache import RedisTier
        from ..model import EgtLM

        torch.set_num_threads(options.threads)
        store = RedisTier(options.redis_url, prefix=options.redis_prefix) if options.redis_url else None
        self.lm = EgtLM(options.model, cache_store=store, **dict(options.settings))

    def __call__(self, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        from ..rag.index import DocumentIndex

        texts = [str(t) for t in batch["text"]]
        metadatas = [json.loads(m) for m in batch["metadata"]]
        index = DocumentIndex()  # this batch's vectors only; the caller's store gets them
        ids = self.lm.document_cache.add(texts, [str(i) for i in batch["id"]], metadatas, index=index)
        by_id = dict(zip(index.ids, index.vectors, strict=True))
        return {
            "id": np.array(ids, dtype=object),
            "text": np.array(texts, dtype=object),
            "metadata": np.array([json.dumps(m) for m in metadatas], dtype=object),
            "vector": np.stack([by_id[i] for i in ids]),
        }


def index_on_ray(
    documents: Sequence[Mapping[str, Any]],
    options: RayIndexOptions | None = None,
    *,
    done: Collection[str] = (),
    address: str | None = None,
) -> Iterator[IndexedBatch]:
    """Embed and capture `documents` ({"id", "text", "metadata"?}) on a Ray cluster; yields batches
    as they finish, so the caller can store each one (and a stopped run resumes with `done`).

    `address`: a running cluster ("auto", "ray://host:10001"); None starts a local one (or uses the
    one this process already joined). Documents whose id is in `done` are skipped.

    Example:
        >>> for batch in index_on_ray(docs, RayIndexOptions(redis_url="redis://127.0.0.1:6379/0")):
        ...     my_store.add(batch.ids, batch.vectors, batch.metadatas)
    """
    try:
        import ray
    except ImportError as e:
        raise ImportError("Indexing on Ray needs Ray Data: pip install 'egtlm[ray]'") from e
    options = options or RayIndexOptions()
    rows = _rows(documents, done)
    if not rows:
        return
    if not ray.is_initialized():
        env = {"OMP_NUM_THREADS": str(options.threads), "TOKENIZERS_PARALLELISM": "false"}
        ray.init(address=address, runtime_env={"env_vars": env}, log_to_driver=False)
    dataset = ray.data.from_items(rows).map_batches(
        DocumentIndexer,
        fn_constructor_kwargs={"options": options},
        batch_size=options.batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=options.actors),
        num_cpus=options.threads,
    )
    for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
        yield IndexedBatch(
            ids=[str(i) for i in batch["id"]],
            texts=[str(t) for t in batch["text"]],
            metadatas=[json.loads(m) for m in batch["metadata"]],
            vectors=np.asarray(batch["vector"], dtype=np.float32),
        )


def _rows(documents: Sequence[Mapping[str, Any]], done: Collection[str]) -> list[dict[str, str]]:
    """Checked rows still to do; a bad document fails here, before a cluster starts."""
    rows, seen = [], set(done)
    for n, doc in enumerate(documents):
        text, doc_id = doc.get("text"), doc.get("id")
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"Document {n} needs a non-empty string 'text', got {text!r}.")
        if not isinstance(doc_id, str) or not doc_id:
            raise ValueError(f"Document {n} needs a string 'id' (resuming skips documents by id).")
        if doc_id in seen:
            continue
        seen.add(doc_id)
        rows.append({"id": doc_id, "text": text, "metadata": json.dumps(dict(doc.get("metadata") or {}))})
    skipped = len(documents) - len(rows)
    if skipped:
        logger.info("Skipping %d documents already indexed (or repeated ids).", skipped)
    return rows
