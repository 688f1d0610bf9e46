"""Evaluation on local data: STS (Spearman), retrieval (nDCG@10, recall@k, MRR), RAG answer match.

Readers for the shared sets are in `datasets`; `run_eval` runs named tasks against a model through
its public API. Training uses the same evaluators for dev-set checks, and the benchmarks the same
retrieval helpers (`corpus_subset`, `qa_as_retrieval`, `top_k`, `score_rankings`) and answer scoring
(`answer_metrics`), so their numbers are computed as `egtlm eval` computes them.
"""

from __future__ import annotations

from .answers import answer_metrics
from .datasets import (
    DataError,
    QAItem,
    QASet,
    RetrievalSet,
    ScoredPair,
    data_dir,
    read_scifact,
    read_stsb,
    read_xquad,
    read_zh_stsb,
    subsample,
)
from .rag import evaluate_rag
from .retrieval import (
    corpus_subset,
    evaluate_retrieval,
    ndcg_at_k,
    qa_as_retrieval,
    recall_at_k,
    reciprocal_rank,
    score_rankings,
    top_k,
)
from .runner import HEADLINE, TASKS, EvalOptions, run_eval
from .sts import evaluate_sts, spearman

__all__ = [
    "HEADLINE",
    "TASKS",
    "DataError",
    "EvalOptions",
    "QAItem",
    "QASet",
    "RetrievalSet",
    "ScoredPair",
    "answer_metrics",
    "corpus_subset",
    "data_dir",
    "evaluate_rag",
    "evaluate_retrieval",
    "evaluate_sts",
    "ndcg_at_k",
    "qa_as_retrieval",
    "read_scifact",
    "read_stsb",
    "read_xquad",
    "read_zh_stsb",
    "recall_at_k",
    "reciprocal_rank",
    "run_eval",
    "score_rankings",
    "spearman",
    "subsample",
    "top_k",
]
