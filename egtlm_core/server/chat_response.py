"""A finished (or streaming) generation in OpenAI's chat.completion / chat.completion.chunk shapes.

`usage.prompt_tokens_details.cached_tokens` counts the prompt tokens spliced from the shared cache
instead of prefilled; the `egtlm` field adds what the cache did and the timings (clients that do
not know it ignore it).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

from ..generation.tools import ToolCall


def completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex[:24]}"


def usage(result: Any) -> dict[str, Any]:
    return {
        "prompt_tokens": result.prompt_tokens,
        "completion_tokens": result.completion_tokens,
        "total_tokens": result.prompt_tokens + result.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": int(getattr(result, "reused_tokens", 0))},
    }


def stats(result: Any) -> dict[str, Any]:
    """Queue time, TTFT, total time and what the shared cache reused (the `egtlm` field)."""
    out: dict[str, Any] = {
        "queue_s": result.queue_s,
        "ttft_s": result.ttft_s,
        "total_s": result.total_s,
        "reused_tokens": int(getattr(result, "reused_tokens", 0)),
        "prefilled_tokens": int(getattr(result, "prefilled_tokens", result.prompt_tokens)),
    }
    reuse = getattr(result, "reuse", None)
    if reuse is not None:
        out.update(reuse.summary())
    return out


def openai_tool_calls(calls: list[ToolCall], with_index: bool = False) -> list[dict[str, Any]]:
    out = []
    for i, call in enumerate(calls):
        item: dict[str, Any] = {
            "id": call.id,
            "type": "function",
            "function": {"name": call.name, "arguments": json.dumps(call.arguments, ensure_ascii=False)},
        }
        out.append({"index": i, **item} if with_index else item)
    return out


def completion(result: Any, model: str, cid: str, created: int) -> dict[str, Any]:
    calls = result.tool_calls
    message: dict[str, Any] = {"role": "assistant", "content": None if calls else result.text}
    if calls:
        message["tool_calls"] = openai_tool_calls(calls)
    finish = "tool_calls" if calls else _finish(result.finish_reason)
    return {
        "id": cid,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
        "usage": usage(result),
        "egtlm": stats(result),
    }


def _finish(reason: str) -> str:
    return "length" if reason == "length" else "stop"


def chunk(
    cid: str, created: int, model: str, delta: dict[str, Any] | None, finish: str | None = None
) -> dict:
    choices = (
        [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]
    )
    return {
        "id": cid,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": choices,
    }


def stream_chunks(stream: Any, model: str, cid: str, created: int) -> Iterator[dict[str, Any]]:
    """The chunk dicts of a streamed completion (an `EgtLM.stream_chat`), role first and the finish
    reason last; the core holds a possible tool call back, so its calls come after the text."""
    yield chunk(cid, created, model, {"role": "assistant", "content": ""})
    for piece in stream:
        yield chunk(cid, created, model, {"content": piece})
    calls = stream.result.tool_calls
    if calls:
        yield chunk(cid, created, model, {"tool_calls": openai_tool_calls(calls, with_index=True)})
    yield chunk(cid, created, model, {}, "tool_calls" if calls else _finish(stream.result.finish_reason))


def created_now() -> int:
    return int(time.time())
