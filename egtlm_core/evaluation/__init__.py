"""Evaluation on local data: STS (Spearman), retrieval (nDCG@10, recall@k, MRR), RAG answer match.

Readers for the shared sets are in `datasets`; `run_eval` runs named tasks against a model through
its public API. Training uses the same evaluators for dev-set checks.
"""

from __future__ import annotations

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
from .retrieval import evaluate_retrieval, ndcg_at_k, recall_at_k, reciprocal_rank
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
    "data_dir",
    "evaluate_rag",
    "evaluate_retrieval",
    "evaluate_sts",
    "ndcg_at_k",
    "read_scifact",
    "read_stsb",
    "read_xquad",
    "read_zh_stsb",
    "recall_at_k",
    "reciprocal_rank",
    "run_eval",
    "spearman",
    "subsample",
]
