"""An OpenAI chat request -> the messages and options of one `EgtLM.chat` call.

Everything model-specific is the core's: tools are described and forced the way `ChatEgtLM` does it
(`generation.tools`, `constrained.tool_call_schema`), `response_format` compiles to the same JSON
grammar, tool calls and results in the history are written in words. Chat always runs with
`reuse_cache=True`: documents this server indexed or handed out (`/v1/retrieve`) that appear in the
prompt are spliced from the shared cache, exactly as `ChatEgtLM` splices them.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from typing import Any

from ..generation.constrained import JsonGrammar, json_grammar, tool_call_schema
from ..generation.tools import (
    ToolPlan,
    plan_tools,
    render_tool_call,
    tool_result_line,
    tool_results_turn,
    with_tools_prompt,
)
from ..model import EgtLM
from .errors import APIError
from .schemas import ChatRequest, Message, NamedToolChoice
from .settings import ServerSettings


@dataclass
class ChatCall:
    """One chat completion, resolved: rendered messages, decoding options, grammar, tool plan."""

    messages: list[dict[str, str]]
    options: dict[str, Any]
    grammar: JsonGrammar | None
    tools: ToolPlan | None

    def kwargs(self, cancel: threading.Event | None) -> dict[str, Any]:
        """Keyword arguments for `EgtLM.chat` / `stream_chat` (a fresh grammar processor each call)."""
        processors = None
        if self.grammar is not None:
            processors = [self.grammar.processor(max_new_tokens=self.options["max_new_tokens"])]
        return {**self.options, "logits_processor": processors, "cancel": cancel}


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


def _grammar(lm: EgtLM, body: ChatRequest, plan: ToolPlan | None) -> JsonGrammar | None:
    if plan is not None:
        return (
            json_grammar(lm.tokenizer, tool_call_schema(plan.forced), model=lm.model) if plan.forced else None
        )
    fmt = body.response_format
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_schema":
        if fmt.json_schema is None:
            raise APIError(
                400, "response_format json_schema needs a json_schema object.", param="response_format"
            )
        return json_grammar(lm.tokenizer, fmt.json_schema.schema_, model=lm.model)
    return json_grammar(lm.tokenizer, None, model=lm.model)  # json_object: any JSON object


def build_chat_call(lm: EgtLM, body: ChatRequest, settings: ServerSettings) -> ChatCall:
    """Resolve a request; every problem is a 400 naming the parameter."""
    _check_unsupported(body)
    messages = to_chat_messages(body.messages)
    tools = [t.model_dump(exclude_none=True) for t in body.tools or ()]
    choice: Any = body.tool_choice
    if isinstance(choice, NamedToolChoice):
        choice = choice.model_dump()
    if choice is not None and choice != "none" and not tools:
        raise APIError(400, "tool_choice is set but no tools were given.", param="tool_choice")
    try:
        plan = plan_tools(tools, choice)
    except ValueError as err:
        raise APIError(400, str(err), param="tool_choice") from err
    if plan is not None:
        messages = with_tools_prompt(messages, plan)
    grammar = _grammar(lm, body, plan)
    max_new_tokens = _max_tokens(body, settings)
    if grammar is not None:
        grammar.check_budget(max_new_tokens)  # a ValueError: 400 with the tokens the schema needs
    options = {
        "max_new_tokens": max_new_tokens,
        "temperature": 0.0 if body.temperature is None else body.temperature,
        "top_p": 1.0 if body.top_p is None else body.top_p,
        # A stop string inside constrained JSON would cut it; the grammar ends the output there.
        "stop": None if grammar is not None else _stop(body),
        "reuse_cache": True,
    }
    return ChatCall(messages, options, grammar, plan)
