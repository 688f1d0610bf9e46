"""One `ChatEgtLM` call resolved (`Request`), and the LangChain metadata of its result."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from egtlm_core import EgtLM


@dataclass
class Request:
    """One generation, resolved: the model, the rendered messages and the options of `EgtLM.chat`
    (tools, tool_choice and response_format included: the core builds the grammar and parses)."""

    lm: EgtLM
    model_name: str
    messages: list[dict[str, str]]
    options: dict[str, Any]

    def chat_kwargs(self, cancel: threading.Event | None = None) -> dict[str, Any]:
        """Keyword arguments for `EgtLM.chat` / `stream_chat`; setting `cancel` stops the generation
        within one token."""
        return {**self.options, "cancel": cancel}


def metadata(req: Request, result: Any, has_calls: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """(usage_metadata, response_metadata) for a finished generation."""
    reused = int(getattr(result, "reused_tokens", 0))
    usage: dict[str, Any] = {
        "input_tokens": result.prompt_tokens,
        "output_tokens": result.completion_tokens,
        "total_tokens": result.prompt_tokens + result.completion_tokens,
    }
    if req.options["reuse_cache"]:
        usage["input_token_details"] = {"cache_read": reused}
    reuse = getattr(result, "reuse", None)
    stats = {
        "queue_s": result.queue_s,  # waiting for the process-wide generation slot
        "ttft_s": result.ttft_s,
        "total_s": result.total_s,
        "reused_tokens": reused,
        "prefilled_tokens": int(getattr(result, "prefilled_tokens", result.prompt_tokens)),
    }
    if reuse is not None:  # exact / approximate slots, recomputed tokens, hits, misses, fallback
        stats.update(reuse.summary())
    response = {
        "model_name": req.model_name,
        "finish_reason": "tool_calls" if has_calls else result.finish_reason,
        "egtlm": stats,
    }
    return usage, response
