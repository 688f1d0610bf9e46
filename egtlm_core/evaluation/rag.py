"""Generation kept: XQuAD answers with the gold paragraph given (no retrieval), greedy.

Measures what training does to the model's reading and answering, apart from retrieval and from
the multi-document cache approximation (those have their own numbers). The prompt is the default
RAG layout of `EgtLM.answer` with the one gold paragraph, prefilled in full (`reuse_cache=False`:
no states are written to the user's cache store, and bf16 rounding of a two-chunk prefill does not
enter the number).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from .answers import answer_metrics
from .datasets import QAItem, QASet, subsample

logger = logging.getLogger(__name__)

DEFAULT_QUESTIONS = 100
DEFAULT_MAX_NEW_TOKENS = 48


class Answerer(Protocol):
    """What the RAG evaluator needs from a model: `EgtLM.answer`."""

    def answer(self, question: str, documents: Sequence[Any] | None = None, **kwargs: Any) -> Any: ...


def evaluate_rag(
    model: Answerer,
    qa: QASet,
    limit: int | None = DEFAULT_QUESTIONS,
    seed: int = 0,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    reuse_cache: bool = False,
) -> dict[str, Any]:
    """Answer a seeded sample of `limit` questions from their gold paragraph; match/F1/EM in percent.

    With seed 0 and 100 questions this is the sample `benchmarks/rag_quality.py` draws.

    Example:
        >>> evaluate_rag(EgtLM(), read_xquad(), limit=20)["match"]
    """
    questions: list[QAItem] = subsample(qa.questions, limit, seed)
    if not questions:
        raise ValueError("evaluate_rag needs at least one question.")
    start = time.perf_counter()
    rows = []
    for i, q in enumerate(questions):
        out = model.answer(
            q.question, [qa.paragraphs[q.paragraph]], max_new_tokens=max_new_tokens, reuse_cache=reuse_cache
        )
        rows.append({"id": q.id, "answer": out.text, **answer_metrics(out.text, q.answers)})
        if (i + 1) % 10 == 0:
            logger.info("rag: %d/%d questions, %.0f s", i + 1, len(questions), time.perf_counter() - start)
    return {
        **{key: 100 * float(np.mean([r[key] for r in rows])) for key in ("match", "f1", "em")},
        "questions": len(rows),
        "max_new_tokens": max_new_tokens,
        "seconds": time.perf_counter() - start,
        "rows": rows,
    }
