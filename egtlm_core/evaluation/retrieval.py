"""Retrieval quality: nDCG@10 with graded relevance, recall@k and MRR@10 over a ranked corpus.

nDCG uses trec_eval's (and so BEIR's) linear gain, `rel / log2(rank + 1)`, with the ideal ranking
built from every judged document of the query. Queries are embedded with `encode_queries`, documents
with `encode_documents`, exactly as a retriever over `EgtLM()` embeds them.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .datasets import QASet, RetrievalSet, subsample
from .sts import Encoder

DEFAULT_KS: tuple[int, ...] = (1, 5, 10, 100)


def dcg(gains: Sequence[float]) -> float:
    """Discounted cumulative gain of gains in rank order (rank 1 first)."""
    return sum(g / math.log2(rank + 1) for rank, g in enumerate(gains, start=1))


def ndcg_at_k(ranking: Sequence[str], qrels: Mapping[str, int], k: int = 10) -> float:
    """nDCG@k of one ranked list of document ids against graded judgements (grades ≤ 0: not relevant)."""
    ideal = dcg(sorted((g for g in qrels.values() if g > 0), reverse=True)[:k])
    if ideal == 0:
        raise ValueError("ndcg_at_k needs at least one relevant document (grade > 0) in qrels.")
    return dcg([max(qrels.get(d, 0), 0) for d in ranking[:k]]) / ideal


def recall_at_k(ranking: Sequence[str], qrels: Mapping[str, int], k: int) -> float:
    """Share of the relevant documents (grade > 0) found in the top k."""
    relevant = {d for d, g in qrels.items() if g > 0}
    if not relevant:
        raise ValueError("recall_at_k needs at least one relevant document (grade > 0) in qrels.")
    return len(relevant.intersection(ranking[:k])) / len(relevant)


def reciprocal_rank(ranking: Sequence[str], qrels: Mapping[str, int], k: int = 10) -> float:
    """1 / rank of the first relevant document within the top k, else 0."""
    for rank, d in enumerate(ranking[:k], start=1):
        if qrels.get(d, 0) > 0:
            return 1.0 / rank
    return 0.0


def top_k(queries: np.ndarray, documents: np.ndarray, k: int, chunk: int = 256) -> np.ndarray:
    """Indices of the k highest dot products per query, best first (ties: lower index first)."""
    k = min(k, documents.shape[0])
    out = np.empty((queries.shape[0], k), dtype=np.int64)
    for start in range(0, queries.shape[0], chunk):
        scores = queries[start : start + chunk] @ documents.T
        # a stable sort on -score keeps corpus order among equal scores, so results are reproducible
        out[start : start + chunk] = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return out


def score_rankings(
    rankings: Mapping[str, Sequence[str]], qrels: Mapping[str, Mapping[str, int]], ks: Sequence[int]
) -> dict[str, float]:
    """Mean nDCG@10, MRR@10 and recall@k over the queries in `rankings`."""
    if not rankings:
        raise ValueError("score_rankings needs at least one ranked query.")
    metrics: dict[str, list[float]] = {"ndcg@10": [], "mrr@10": [], **{f"recall@{k}": [] for k in ks}}
    for qid, ranking in rankings.items():
        judged = qrels[qid]
        metrics["ndcg@10"].append(ndcg_at_k(ranking, judged, 10))
        metrics["mrr@10"].append(reciprocal_rank(ranking, judged, 10))
        for k in ks:
            metrics[f"recall@{k}"].append(recall_at_k(ranking, judged, k))
    return {name: float(np.mean(values)) for name, values in metrics.items()}


def evaluate_retrieval(
    model: Encoder,
    data: RetrievalSet,
    ks: Sequence[int] = DEFAULT_KS,
    limit: int | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Embed the corpus and (a seeded sample of `limit`) queries; rank by cosine; score.

    Only queries with at least one relevant document are scored (BEIR's convention).
    """
    qids = subsample(
        [q for q in data.queries if any(g > 0 for g in data.qrels.get(q, {}).values())], limit, seed
    )
    if not qids:
        raise ValueError("No query has a relevant document in qrels; nothing to evaluate.")
    doc_ids = list(data.corpus)
    start = time.perf_counter()
    doc_vectors = np.asarray(model.encode_documents([data.corpus[d] for d in doc_ids]), dtype=np.float32)
    docs_s = time.perf_counter() - start
    query_vectors = np.asarray(model.encode_queries([data.queries[q] for q in qids]), dtype=np.float32)
    queries_s = time.perf_counter() - start - docs_s
    top = top_k(query_vectors, doc_vectors, max(10, *ks))
    rankings = {q: [doc_ids[i] for i in row] for q, row in zip(qids, top, strict=True)}
    return {
        **score_rankings(rankings, data.qrels, ks),
        "queries": len(qids),
        "documents": len(doc_ids),
        "documents_s": docs_s,
        "queries_s": queries_s,
        "seconds": time.perf_counter() - start,
    }


def corpus_subset(data: RetrievalSet, max_documents: int | None, seed: int = 0) -> RetrievalSet:
    """The judged documents of `data`'s queries plus a seeded sample of the others, `max_documents` in all.

    A fast stand-in for the full corpus: fewer distractors make every metric higher than the
    full-corpus number, so compare subset numbers only with subset numbers of the same size.
    """
    if max_documents is None or max_documents >= len(data.corpus):
        return data
    judged = {d for docs in data.qrels.values() for d in docs if d in data.corpus}
    if max_documents < len(judged):
        raise ValueError(
            f"max_documents={max_documents} is below the {len(judged)} judged documents of the queries."
        )
    room = max_documents - len(judged)
    others = subsample([d for d in data.corpus if d not in judged], room, seed) if room else []
    keep = judged.union(others)
    corpus = {d: text for d, text in data.corpus.items() if d in keep}
    return RetrievalSet(corpus, dict(data.queries), {q: dict(r) for q, r in data.qrels.items()})


def qa_as_retrieval(qa: QASet) -> RetrievalSet:
    """Question → gold paragraph retrieval over all paragraphs of a QA set (one relevant each)."""
    corpus = {f"p{i}": {"title": "", "text": text} for i, text in enumerate(qa.paragraphs)}
    queries = {q.id: q.question for q in qa.questions}
    if len(queries) != len(qa.questions):
        raise ValueError("Question ids in the QA set are not unique.")
    return RetrievalSet(corpus, queries, {q.id: {f"p{q.paragraph}": 1} for q in qa.questions})
