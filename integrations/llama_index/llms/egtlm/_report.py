"""What each generation did with the shared cache, collected per query for the response's metadata.

`EgtLMLLM` puts its report in `ChatResponse.additional_kwargs["egtlm"]`, but a query engine's
synthesizer calls `llm.predict`, which keeps only the text. So the synthesizer opens a collector
(`collect_reports`) around its work and every `EgtLMLLM` call made inside appends its report. The
collector is a list in a context variable: worker threads (`asyncio.to_thread` copies the context)
and concurrent queries (each task has its own context) each reach the right one.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

_REPORTS: ContextVar[list[dict[str, Any]] | None] = ContextVar("egtlm_reports", default=None)


@contextmanager
def collect_reports() -> Iterator[list[dict[str, Any]]]:
    """A list that receives the report of every `EgtLMLLM` generation started inside the block."""
    reports: list[dict[str, Any]] = []
    token = _REPORTS.set(reports)
    try:
        yield reports
    finally:
        _REPORTS.reset(token)


def current_collector() -> list[dict[str, Any]] | None:
    """The open collector (taken when a generation starts: a stream ends after the block may have)."""
    return _REPORTS.get()


def report(result: Any, reuse_cache: bool) -> dict[str, Any]:
    """The per-call report: timings, token counts and the core's `ReuseStats.summary()`."""
    stats: dict[str, Any] = {
        "queue_s": result.queue_s,
        "ttft_s": result.ttft_s,
        "total_s": result.total_s,
        "prompt_tokens": result.prompt_tokens,
        "completion_tokens": result.completion_tokens,
        "reuse_cache": reuse_cache,
        "reused_tokens": int(getattr(result, "reused_tokens", 0)),
        "prefilled_tokens": int(getattr(result, "prefilled_tokens", result.prompt_tokens)),
    }
    reuse = getattr(result, "reuse", None)
    if reuse is not None:  # exact / approximate slots, recomputed tokens, hits, misses, fallback
        stats.update(reuse.summary())
    return stats
