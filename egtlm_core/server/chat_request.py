"""An OpenAI chat request -> the messages and options of one `EgtLM.chat` call.

Everything model-specific is the core's: `EgtLM.chat` takes the request's tools, tool_choice and
response_format as they are (prompt, grammar, stop rule, parsed calls), and tool calls and results in
the history are written in words (`generation.tools`). Chat always runs with
`reuse_cache=True`: documents this server indexed or handed out (`/v1/retrieve`) that appear in the
prompt are spliced from the shared cache, exactly as `ChatEgtLM` splices them.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from typing import Any

from ..generation.tools import render_tool_call, tool_result_line, tool_results_turn
from .errors import APIError
from .schemas import ChatRequest, Message, NamedToolChoice
from .settings import ServerSettings


@dataclass
class ChatCall:
    """One chat completion, resolved: rendered messages and the options of `EgtLM.chat`."""

    messages: list[dict[str, str]]
    options: dict[str, Any]

    def kwargs(self, cancel: threading.Event | None) -> dict[str, Any]:
        """Keyword arguments for `EgtLM.chat` / `stream_chat`."""
        return {**self.options, "cancel": cancel}


def text_of(message: Message, i: int) -> str:
    content = message.content
    if content is None:
        if message.role in ("assistant", "tool"):
            return ""
        raise APIError(400, f"messages[{i}] ({message.role}) has no content.", param=f"messages.{i}.content")
    if isinstance(content, str):
        return content
    return "".join(part.text for part in content)


def _arguments(raw: str) -> Any:
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def to_chat_messages(messages: list[Message]) -> list[dict[str, str]]:
    """OpenAI messages -> the {"role", "content"} dicts the chat template renders.

    "developer" is a system message; an assistant's tool calls are written in words; consecutive
    tool results become one user turn saying what each tool returned (what `ChatEgtLM` does too).
    """
    out: list[dict[str, str]] = []
    names: dict[str, str] = {}  # tool_call_id -> tool name
    results: list[str] = []
    for i, message in enumerate(messages):
        text = text_of(message, i)
        if message.role == "tool":
            name = message.name or names.get(message.tool_call_id or "")
            results.append(tool_result_line(name, text))
            continue
        if results:
            out.append(tool_results_turn(results))
            results = []
        if message.role == "assistant":
            calls = message.tool_calls or []
            names.update({c.id: c.function.name for c in calls if c.id})
            said = [
                render_tool_call(c.function.name, _as_args(_arguments(c.function.arguments))) for c in calls
            ]
            text = "\n".join(t for t in [text.strip(), *said] if t) if said else text
        role = "system" if message.role == "developer" else message.role
        out.append({"role": role, "content": text})
    if results:
        out.append(tool_results_turn(results))
    return out


def _as_args(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {"arguments": value}


def _max_tokens(body: ChatRequest, settings: ServerSettings) -> int:
    asked = body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
    if asked is None:
        return settings.default_max_tokens
    if asked > settings.max_tokens:
        name = "max_completion_tokens" if body.max_completion_tokens is not None else "max_tokens"
        raise APIError(
            400,
            f"{name}={asked} is above this server's limit of {settings.max_tokens} (--max-tokens).",
            param=name,
        )
    return asked


def _stop(body: ChatRequest) -> list[str] | None:
    stop = [body.stop] if isinstance(body.stop, str) else body.stop
    if stop is not None and len(stop) > 4:
        raise APIError(400, f"stop takes at most 4 sequences, got {len(stop)}.", param="stop")
    return stop


def _check_unsupported(body: ChatRequest) -> None:
    if body.logprobs:
        raise APIError(400, "logprobs are not supported by this server.", param="logprobs")
    if body.logit_bias:
        raise APIError(400, "logit_bias is not supported by this server.", param="logit_bias")


def _response_format(body: ChatRequest) -> dict[str, Any] | None:
    fmt = body.response_format
    if fmt is None:
        return None
    if fmt.type == "json_schema" and fmt.json_schema is None:
        raise APIError(
            400, "response_format json_schema needs a json_schema object.", param="response_format"
        )
    return fmt.model_dump(by_alias=True, exclude_none=True)


def build_chat_call(body: ChatRequest, settings: ServerSettings) -> ChatCall:
    """Resolve a request; every problem is a 400 naming the parameter (the core's own checks of
    tools and budgets are 400s too, raised at the call)."""
    _check_unsupported(body)
    tools = [t.model_dump(exclude_none=True) for t in body.tools or ()]
    choice: Any = body.tool_choice
    if isinstance(choice, NamedToolChoice):
        choice = choice.model_dump()
    if choice is not None and choice != "none" and not tools:
        raise APIError(400, "tool_choice is set but no tools were given.", param="tool_choice")
    options = {
        "max_new_tokens": _max_tokens(body, settings),
        "temperature": 0.0 if body.temperature is None else body.temperature,
        "top_p": 1.0 if body.top_p is None else body.top_p,
        "stop": _stop(body),
        "tools": tools or None,
        "tool_choice": choice,
        "response_format": _response_format(body),
        "reuse_cache": True,
    }
    return ChatCall(to_chat_messages(body.messages), options)
