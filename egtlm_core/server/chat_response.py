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

from ..generation.tools import ToolCall, looks_like_call, parse_calls
from .chat_request import ChatCall


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


def parsed_calls(call: ChatCall, text: str) -> list[ToolCall] | None:
    return parse_calls(text, call.tools.names) if call.tools is not None and text else None


def completion(call: ChatCall, result: Any, model: str, cid: str, created: int) -> dict[str, Any]:
    calls = parsed_calls(call, result.text)
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


def stream_pieces(call: ChatCall, pieces: Iterator[str]) -> Iterator[tuple[str, Any]]:
    """("text", piece) as generated, then ("calls", [ToolCall]) or ("text", held) for held-back text.

    With tools bound, text that may be a tool call (starts like JSON) is held back until it can be
    parsed; a forced call is held whole (what `ChatEgtLM` streams too).
    """
    forced = call.tools is not None and bool(call.tools.forced)
    undecided = call.tools is not None and not forced
    hold, held = forced, ""
    for piece in pieces:
        if hold or undecided:
            held += piece
            if undecided and held.strip():
                undecided, hold = False, looks_like_call(held)
                if not hold:
                    yield "text", held
                    held = ""
            continue
        yield "text", piece
    calls = parsed_calls(call, held)
    if calls:
        yield "calls", calls
    elif held:
        yield "text", held


def stream_chunks(
    call: ChatCall, events: Iterator[tuple[str, Any]], result: Any, model: str, cid: str, created: int
) -> Iterator[dict[str, Any]]:
    """The chunk dicts of a streamed completion, role first and the finish reason last."""
    yield chunk(cid, created, model, {"role": "assistant", "content": ""})
    called = False
    for kind, value in events:
        if kind == "text":
            yield chunk(cid, created, model, {"content": value})
        else:
            called = True
            yield chunk(cid, created, model, {"tool_calls": openai_tool_calls(value, with_index=True)})
    yield chunk(cid, created, model, {}, "tool_calls" if called else _finish(result.finish_reason))


def created_now() -> int:
    return int(time.time())
