"""`DocumentIndex`: ids, texts, metadata and unit vectors in one place, with exact cosine top-k.

Every adapter that keeps documents in egtlm itself (the LangChain retriever without a vector store,
`EgtLM.index`, the server) uses this one class, so a document's text, metadata and vector can never
drift apart, and two retrievers on one model each see their own documents. Vectors live in one
growing float32 matrix; ids map to rows, and a delete moves the last row into the hole, so adding,
replacing and deleting cost O(1) per document (no scans over existing ids). Real deployments with
millions of documents put vectors in Chroma & co. and hand `answer` the retrieved texts.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class IndexedDocument:
    """One document as stored: its id, text and metadata (a copy; changing it changes nothing)."""

    id: str
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ScoredDocument:
    """A search hit: the document and its cosine similarity to the query."""

    document: IndexedDocument
    score: float


def check_k(k: Any) -> int:
    """`k` as given by a user: a positive integer (bools are not)."""
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}.")
    return k


def check_batch(
    ids: Sequence[str], texts: Sequence[str], vectors: np.ndarray, metadatas: Sequence[Mapping] | None
) -> list[dict[str, Any]]:
    """Validate one add/upsert call; -> the metadata dicts (copied)."""
    n = len(texts)
    if len(ids) != n:
        raise ValueError(f"Got {len(ids)} ids for {n} texts.")
    if metadatas is not None and len(metadatas) != n:
        raise ValueError(f"Got {len(metadatas)} metadatas for {n} texts.")
    if vectors.ndim != 2 or vectors.shape[0] != n:
        raise ValueError(f"Expected vectors of shape [{n}, dim], got {list(vectors.shape)}.")
    bad = [i for i, x in enumerate(ids) if not isinstance(x, str) or not x]
    if bad:
        raise ValueError(f"ids{bad[:5]} are not non-empty strings; ids must be strings.")
    seen: set[str] = set()
    dupes = sorted({x for x in ids if x in seen or seen.add(x)})  # type: ignore[func-returns-value]
    if dupes:
        raise ValueError(f"Duplicate ids in one call: {dupes[:5]}; give each document its own id.")
    return [dict(m) for m in metadatas] if metadatas is not None else [{} for _ in range(n)]


class DocumentIndex:
    """Documents with their vectors; thread-safe.

    Example:
        >>> index = DocumentIndex()
        >>> index.add(["a", "b"], ["Paris is in France.", "Berlin is in Germany."], vectors)
        >>> [hit.document.id for hit in index.search(query_vector, k=1)]
        ['a']
    """

    def __init__(self) -> None:
        self._rows: dict[str, int] = {}  # id -> row of _vectors
        self._docs: list[IndexedDocument] = []  # row -> document
        self._vectors = np.zeros((0, 0), dtype=np.float32)  # capacity rows; the first len(self) used
        self._lock = threading.RLock()

    def __len__(self) -> int:
        return len(self._docs)

    def __contains__(self, doc_id: object) -> bool:
        return doc_id in self._rows

    @property
    def ids(self) -> list[str]:
        with self._lock:
            return [d.id for d in self._docs]

    @property
    def texts(self) -> list[str]:
        with self._lock:
            return [d.text for d in self._docs]

    @property
    def vectors(self) -> np.ndarray:
        """A copy of the vectors, row i for `ids[i]`."""
        with self._lock:
            return self._vectors[: len(self._docs)].copy()

    @property
    def dim(self) -> int | None:
        """The vectors' width, once the first document is in."""
        return self._vectors.shape[1] if self._docs else None

    def add(
        self,
        ids: Sequence[str],
        texts: Sequence[str],
        vectors: np.ndarray,
        metadatas: Sequence[Mapping[str, Any]] | None = None,
    ) -> None:
        """Add new documents; an id already in the index is an error (use `upsert` to replace)."""
        with self._lock:
            taken = [x for x in ids if x in self._rows]
            if taken:
                raise ValueError(
                    f"ids {taken[:5]} are already in the index; use upsert() to replace documents."
                )
            self.upsert(ids, texts, vectors, metadatas)

    def upsert(
        self,
        ids: Sequence[str],
        texts: Sequence[str],
        vectors: np.ndarray,
        metadatas: Sequence[Mapping[str, Any]] | None = None,
    ) -> list[IndexedDocument]:
        """Add documents, replacing text, metadata and vector of ids already present.

        Returns the replaced documents whose text changed, so the caller can drop their stored states.
        """
        if not len(texts) and not len(ids):
            return []
        vectors = np.asarray(vectors, dtype=np.float32)
        metas = check_batch(ids, texts, vectors, metadatas)
        replaced: list[IndexedDocument] = []
        with self._lock:
            self._reserve(len(self._docs) + len(ids), vectors.shape[1])
            for doc_id, text, vector, meta in zip(ids, texts, vectors, metas, strict=True):
                doc = IndexedDocument(doc_id, text, meta)
                row = self._rows.get(doc_id)
                if row is None:
                    row = len(self._docs)
                    self._rows[doc_id] = row
                    self._docs.append(doc)
                else:
                    if self._docs[row].text != text:
                        replaced.append(self._docs[row])
                    self._docs[row] = doc
                self._vectors[row] = vector
        return replaced

    def delete(self, ids: Sequence[str]) -> list[IndexedDocument]:
        """Remove documents by id (unknown ids are ignored); -> the removed documents."""
        removed = []
        with self._lock:
            for doc_id in ids:
                row = self._rows.pop(doc_id, None)
                if row is None:
                    continue
                removed.append(self._docs[row])
                last = len(self._docs) - 1
                if row != last:  # move the last document into the hole
                    moved = self._docs[last]
                    self._docs[row] = moved
                    self._vectors[row] = self._vectors[last]
                    self._rows[moved.id] = row
                self._docs.pop()
        return removed

    def get(self, ids: Sequence[str]) -> list[IndexedDocument | None]:
        """The documents for these ids, None where an id is unknown."""
        with self._lock:
            return [self._docs[self._rows[x]] if x in self._rows else None for x in ids]

    def search(self, query: np.ndarray, k: int) -> list[ScoredDocument]:
        """The `k` documents with the highest cosine similarity to a unit query vector, best first."""
        check_k(k)
        query = np.asarray(query, dtype=np.float32).reshape(-1)
        with self._lock:
            n = len(self._docs)
            if n == 0:
                return []
            if query.shape[0] != self._vectors.shape[1]:
                raise ValueError(
                    f"The query vector has {query.shape[0]} dimensions, the index {self._vectors.shape[1]}; "
                    "embed queries with the model (and dimensions) that embedded the documents."
                )
            scores = self._vectors[:n] @ query
            top = np.argpartition(-scores, k - 1)[:k] if k < n else np.arange(n)
            top = top[np.argsort(-scores[top], kind="stable")]
            return [ScoredDocument(self._docs[i], float(scores[i])) for i in top]

    def _reserve(self, rows: int, dim: int) -> None:
        """Grow the vector matrix (doubling) to hold `rows` vectors of width `dim`."""
        used, (capacity, width) = len(self._docs), self._vectors.shape
        if used and width != dim:
            raise ValueError(f"Vectors have {dim} dimensions, the index holds {width}-dimensional ones.")
        if rows <= capacity and width == dim:
            return
        grown = np.zeros((max(rows, 2 * capacity, 16), dim), dtype=np.float32)
        if used:
            grown[:used] = self._vectors[:used]
        self._vectors = grown
