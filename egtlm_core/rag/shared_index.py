"""`SharedDocumentIndex`: one document index for many processes (server replicas), kept in Redis.

Every change (upsert, delete) is appended to one Redis stream, and each process applies the entries
it has not seen before it reads: the log is the truth, each process's `DocumentIndex` a mirror of
it. Writers publish first and then catch up, so every process applies the same changes in the same
order and two replicas never disagree about a document once both have read the log. Search stays
the exact in-memory cosine top-k of `DocumentIndex`; vectors travel as float32 bytes.

With the KV states in a shared tier too (`RedisTier`), a document posted to one replica is found,
handed out and spliced by every other (`egtlm serve --replicas N --redis URL`).

Redis going away: a write raises (a document that silently stayed in one replica would be lost to the
others); a read serves the mirror as it is, with one warning per outage.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .index import DocumentIndex, IndexedDocument, ScoredDocument, check_batch

logger = logging.getLogger(__name__)

DEFAULT_STREAM = "egtlm:documents"
READ_BATCH = 512  # stream entries per XRANGE call


class SharedDocumentIndex(DocumentIndex):
    """A `DocumentIndex` whose changes go through a Redis stream, so every process sees them.

    Args:
        url: `redis://host:port/db`, or pass `client` (a `redis.Redis` with bytes responses).
        stream: the stream's key; processes that share documents use the same one, and one model's
            vectors must not share a stream with another's (`egtlm serve` names it after the model).
        timeout_s: socket timeout of each command.

    Example:
        >>> shared = SharedDocumentIndex("redis://127.0.0.1:6379/0", stream="egtlm:documents:my-model")
        >>> lm = EgtLM(document_index=shared, cache_store=TieredStore([MemoryTier(), RedisTier(url)]))
    """

    def __init__(
        self,
        url: str | None = "redis://127.0.0.1:6379/0",
        *,
        client: Any = None,
        stream: str = DEFAULT_STREAM,
        timeout_s: float = 2.0,
    ) -> None:
        super().__init__()
        try:
            import redis
        except ImportError as e:
            raise ImportError("SharedDocumentIndex needs the redis client: pip install 'egtlm[redis]'") from e
        if client is None:
            if not url:
                raise ValueError("Pass a Redis url (redis://host:port/db) or a redis.Redis client.")
            client = redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
        if not isinstance(stream, str) or not stream:
            raise ValueError(f"stream must be a non-empty key name, got {stream!r}.")
        self.client = client
        self.stream = stream
        self._unavailable = (redis.ConnectionError, redis.TimeoutError)
        self._seen = "0-0"  # the last stream entry applied here
        self._sync_lock = threading.Lock()  # one catch-up at a time, entries applied in order
        self._down = False

    # --- reading: catch up with the log first ------------------------------------------------------
    def sync(self) -> int:
        """Apply the log's entries this process has not seen; -> how many. A Redis that cannot be
        reached leaves the mirror as it is (warned once per outage)."""
        try:
            applied, _ = self._catch_up(None)
        except self._unavailable as exc:
            if not self._down:
                logger.warning("Shared documents: Redis unavailable (%s); serving this process's copy.", exc)
            self._down = True
            return 0
        if self._down:
            logger.warning("Shared documents: Redis is back.")
            self._down = False
        return applied

    def __len__(self) -> int:
        self.sync()
        return super().__len__()

    def __contains__(self, doc_id: object) -> bool:
        self.sync()
        return super().__contains__(doc_id)

    @property
    def ids(self) -> list[str]:
        self.sync()
        return super().ids

    @property
    def texts(self) -> list[str]:
        self.sync()
        return super().texts

    @property
    def vectors(self) -> np.ndarray:
        self.sync()
        return super().vectors

    @property
    def dim(self) -> int | None:
        self.sync()
        return super().dim

    def get(self, ids: Sequence[str]) -> list[IndexedDocument | None]:
        self.sync()
        return super().get(ids)

    def search(self, query: np.ndarray, k: int) -> list[ScoredDocument]:
        self.sync()
        return super().search(query, k)

    # --- writing: publish, then catch up to (and including) the entry ------------------------------
    def upsert(
        self,
        ids: Sequence[str],
        texts: Sequence[str],
        vectors: np.ndarray,
        metadatas: Sequence[Mapping[str, Any]] | None = None,
    ) -> list[IndexedDocument]:
        """Add or replace documents in every process; -> the replaced documents whose text changed."""
        if not len(texts) and not len(ids):
            return []
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        metas = check_batch(ids, texts, vectors, metadatas)  # a bad batch never enters the log
        width = self.dim
        if width is not None and vectors.shape[1] != width:
            raise ValueError(
                f"Vectors have {vectors.shape[1]} dimensions, the index holds {width}-dimensional ones."
            )
        fields = {
            "op": "upsert",
            "docs": json.dumps({"ids": list(ids), "texts": list(texts), "metadatas": metas}),
            "dim": str(vectors.shape[1]),
            "vectors": vectors.tobytes(),
        }
        return self._publish(fields)

    def delete(self, ids: Sequence[str]) -> list[IndexedDocument]:
        """Remove documents in every process (unknown ids are ignored); -> those removed here."""
        if not ids:
            return []
        return self._publish({"op": "delete", "docs": json.dumps({"ids": list(ids)})})

    def _publish(self, fields: dict[str, Any]) -> list[IndexedDocument]:
        try:
            entry = self.client.xadd(self.stream, fields)
            _, changed = self._catch_up(_text(entry))
        except self._unavailable as exc:
            raise ConnectionError(
                f"The shared document index cannot reach Redis ({exc}); the change was not made. "
                "Check the Redis server, then retry."
            ) from exc
        return changed

    def _catch_up(self, mine: str | None) -> tuple[int, list[IndexedDocument]]:
        """Apply unseen entries in stream order; -> (count, what entry `mine` replaced or removed)."""
        applied, changed = 0, []
        with self._sync_lock:
            while True:
                entries = self.client.xrange(self.stream, min="(" + self._seen, max="+", count=READ_BATCH)
                for entry_id, fields in entries:
                    self._seen = _text(entry_id)
                    try:
                        result = self._apply({_text(k): v for k, v in fields.items()})
                    except (KeyError, ValueError, TypeError) as exc:  # not an entry this class wrote
                        logger.warning("Shared documents: skipping unreadable entry %s: %s", self._seen, exc)
                        continue
                    applied += 1
                    if self._seen == mine:
                        changed = result
                if len(entries) < READ_BATCH:
                    return applied, changed

    def _apply(self, fields: dict[str, Any]) -> list[IndexedDocument]:
        docs = json.loads(_text(fields["docs"]))
        if _text(fields["op"]) == "delete":
            return super().delete(docs["ids"])
        vectors = np.frombuffer(fields["vectors"], dtype=np.float32).reshape(-1, int(_text(fields["dim"])))
        return super().upsert(docs["ids"], docs["texts"], vectors, docs["metadatas"])

    def close(self) -> None:
        self.client.close()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
