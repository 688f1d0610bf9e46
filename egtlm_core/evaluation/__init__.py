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
from .sts import evaluate_sts, spearman

__all__ = [
    "DataError",
    "QAItem",
    "QASet",
    "RetrievalSet",
    "ScoredPair",
    "data_dir",
    "evaluate_sts",
    "read_scifact",
    "read_stsb",
    "read_xquad",
    "read_zh_stsb",
    "spearman",
    "subsample",
]
