"""`run_eval`: named evaluation tasks over local data, one result dict (what `egtlm eval` prints).

Tasks and their headline metric:

    sts       STS-B Spearman (cosine of `encode_documents` vectors)      spearman
    zh_sts    Chinese STS-B Spearman                                    spearman
    scifact   SciFact nDCG@10 (queries vs the corpus)                   ndcg@10
    xquad     XQuAD question -> paragraph recall@5 (240 paragraphs)     recall@5
    rag       XQuAD answer match with the gold paragraph (100 q)        match (%)

"retrieval" means scifact + xquad.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .datasets import read_scifact, read_stsb, read_xquad, read_zh_stsb, subsample
from .rag import DEFAULT_MAX_NEW_TOKENS, DEFAULT_QUESTIONS, evaluate_rag
from .retrieval import corpus_subset, evaluate_retrieval, qa_as_retrieval
from .sts import SIDES, Side, evaluate_sts

logger = logging.getLogger(__name__)

TASKS: tuple[str, ...] = ("sts", "zh_sts", "scifact", "xquad", "rag")
ALIASES: dict[str, tuple[str, ...]] = {"retrieval": ("scifact", "xquad"), "all": TASKS}
HEADLINE: dict[str, str] = {
    "sts": "spearman",
    "zh_sts": "spearman",
    "scifact": "ndcg@10",
    "xquad": "recall@5",
    "rag": "match",
}
DESCRIPTION: dict[str, str] = {
    "sts": "STS-B Spearman",
    "zh_sts": "Chinese STS-B Spearman",
    "scifact": "SciFact nDCG@10",
    "xquad": "XQuAD question->paragraph recall@5",
    "rag": "XQuAD answer match, gold paragraph (%)",
}


@dataclass(frozen=True)
class EvalOptions:
    """Settings shared by the tasks; the defaults are the issue's measurement.

    Attributes:
        limit: score a seeded sample of this many pairs / queries / questions (None: all; "rag"
            defaults to 100 questions).
        split: "test" or "dev" for the STS sets ("train" too); SciFact has "test" and "train" only.
        scifact_documents: corpus subset size (judged documents + random others); None: all 5183.
        sts_sides: embedding sides for the STS tasks; the first is the headline.
        seed: for every sample.
        data_dir: the shared data folder (default: `datasets.data_dir()`).
    """

    limit: int | None = None
    split: str = "test"
    scifact_documents: int | None = None
    sts_sides: tuple[Side, ...] = ("document",)
    seed: int = 0
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    data_dir: str | os.PathLike[str] | None = None

    def __post_init__(self) -> None:
        if not self.sts_sides or any(s not in SIDES for s in self.sts_sides):
            raise ValueError(f"sts_sides must be a non-empty tuple of {SIDES}, got {self.sts_sides!r}.")
        if self.limit is not None and (not isinstance(self.limit, int) or self.limit < 1):
            raise ValueError(f"limit must be a positive integer or None, got {self.limit!r}.")


def expand_tasks(tasks: str | Sequence[str]) -> list[str]:
    """Task names with aliases expanded, duplicates dropped, in the order given."""
    names = [tasks] if isinstance(tasks, str) else list(tasks)
    out: list[str] = []
    for name in names:
        if name not in TASKS and name not in ALIASES:
            raise ValueError(f"Unknown task {name!r}; expected one of {TASKS + tuple(ALIASES)}.")
        out += [t for t in ALIASES.get(name, (name,)) if t not in out]
    if not out:
        raise ValueError(f"No task given; expected some of {TASKS + tuple(ALIASES)}.")
    return out


def _sts(model: Any, pairs: list[Any], opts: EvalOptions) -> dict[str, Any]:
    pairs = subsample(pairs, opts.limit, opts.seed)
    runs = {side: evaluate_sts(model, pairs, side=side) for side in opts.sts_sides}
    head = runs[opts.sts_sides[0]]
    extra = {f"spearman_{side}": r["spearman"] for side, r in runs.items()}
    return {**head, **extra, "seconds": sum(r["seconds"] for r in runs.values())}


def _run_task(model: Any, task: str, opts: EvalOptions) -> dict[str, Any]:
    root = opts.data_dir
    if task == "sts":
        return _sts(model, read_stsb(opts.split, root=root), opts)
    if task == "zh_sts":
        return _sts(model, read_zh_stsb(opts.split, root=root), opts)
    if task == "scifact":
        data = corpus_subset(read_scifact(opts.split, root=root), opts.scifact_documents, opts.seed)
        return evaluate_retrieval(model, data, limit=opts.limit, seed=opts.seed)
    if task == "xquad":
        return evaluate_retrieval(
            model, qa_as_retrieval(read_xquad(root=root)), limit=opts.limit, seed=opts.seed
        )
    limit = DEFAULT_QUESTIONS if opts.limit is None else opts.limit
    return evaluate_rag(model, read_xquad(root=root), limit, opts.seed, opts.max_new_tokens)


def run_eval(
    model: Any,
    tasks: str | Sequence[str] = ("sts",),
    options: EvalOptions | None = None,
    on_result: Callable[[str, dict[str, Any]], None] | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """Evaluate `model` (an `EgtLM`, or a path / name `EgtLM` loads with its defaults) on `tasks`.

    Returns {"model": ..., "options": {...}, "tasks": {task: {metric: value, "seconds": ...}}}.
    `on_result(task, result)` is called as each task finishes (progress for long runs). Keyword
    arguments are `EvalOptions` fields.

    Example:
        >>> run_eval(EgtLM(), ["sts", "xquad"], limit=200)["tasks"]["sts"]["spearman"]
    """
    opts = options or EvalOptions(**kwargs)
    if options is not None and kwargs:
        raise TypeError("Pass either options=EvalOptions(...) or its fields as keywords, not both.")
    names = expand_tasks(tasks)
    if model is None or isinstance(model, (str, os.PathLike)):
        from ..model import EgtLM

        model = EgtLM(model)
    results: dict[str, Any] = {}
    for task in names:
        start = time.perf_counter()
        logger.info("Evaluating %s", task)
        results[task] = _run_task(model, task, opts)
        results[task]["wall_s"] = time.perf_counter() - start
        if on_result is not None:
            on_result(task, results[task])
    source = getattr(model, "source", None)
    return {
        "model": source.cache_id() if source is not None else repr(model),
        "options": {k: (str(v) if isinstance(v, os.PathLike) else v) for k, v in vars(opts).items()},
        "tasks": results,
    }
