"""LlamaIndex chat messages and tools -> the {"role", "content"} dicts `EgtLM.chat` renders.

The default model has no tool-calling template, so tools are described in the system prompt and a
call is one JSON object {"name": ..., "arguments": {...}}; with `tool_required` decoding is
grammar-constrained to that shape (`egtlm_core.tool_call_schema`), so the call always parses.
Calls and results in the history are put in words: a JSON call in the history makes a small model
repeat it (measured for the LangChain adapter, docs/guide_langchain.md).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from typing import Any

from llama_index.core.base.llms.types import ChatMessage, MessageRole
from llama_index.core.llms.llm import ToolSelection

TOOL_CALLS = "tool_calls"  # ChatMessage.additional_kwargs: the calls of an assistant message
_ROLES = {
    MessageRole.SYSTEM: "system",
    MessageRole.DEVELOPER: "system",
    MessageRole.USER: "user",
    MessageRole.ASSISTANT: "assistant",
    MessageRole.CHATBOT: "assistant",
    MessageRole.MODEL: "assistant",
}


def to_chat_messages(messages: Sequence[ChatMessage]) -> list[dict[str, str]]:
    """Messages for the chat template; tool results become a user turn saying what the tool returned."""
    out: list[dict[str, str]] = []
    for message in messages:
        text = message.content or ""
        if message.role in (MessageRole.TOOL, MessageRole.FUNCTION):
            name = message.additional_kwargs.get("name") or message.additional_kwargs.get("tool_name")
            out.append(
                {"role": "user", "content": f"The tool {name or ''} returned: {text}".replace("  ", " ")}
            )
            continue
        calls = message.additional_kwargs.get(TOOL_CALLS) or []
        said = [f"I will call {c.tool_name} with {json.dumps(c.tool_kwargs)}." for c in calls]
        content = "\n".join(t for t in [text.strip(), *said] if t) if said else text
        out.append({"role": _ROLES.get(message.role, "user"), "content": content})
    return out


def tool_specs(tools: Sequence[Any]) -> list[dict[str, Any]]:
    """LlamaIndex tools -> OpenAI-style function tools (what `tool_call_schema` takes)."""
    return [{"type": "function", "function": tool.metadata.to_openai_tool()["function"]} for tool in tools]


def tools_prompt(specs: Sequence[dict[str, Any]], required: bool) -> str:
    lines = ["You can call these tools:"]
    lines += [json.dumps(s["function"], ensure_ascii=False) for s in specs]
    lines.append(
        '\nTo call a tool, reply with only a JSON object: {"name": <tool name>, "arguments": {...}}.'
    )
    if not required:
        lines.append("If no tool is needed, answer normally.")
    return "\n".join(lines)


def with_tools_prompt(messages: list[ChatMessage], text: str) -> list[ChatMessage]:
    """The tool description appended to the system message (one is added if there is none)."""
    if messages and messages[0].role == MessageRole.SYSTEM:
        first = messages[0].model_copy(update={"content": f"{messages[0].content or ''}\n\n{text}".strip()})
        return [first, *messages[1:]]
    return [ChatMessage(role=MessageRole.SYSTEM, content=text), *messages]


def parse_tool_calls(text: str, names: set[str]) -> list[ToolSelection]:
    """The calls in an answer that is a JSON call (or a list of them) to known tools; else []."""
    try:
        data = json.loads(text.strip().removeprefix("```json").removesuffix("```").strip())
    except ValueError:
        return []
    calls = []
    for item in data if isinstance(data, list) else [data]:
        if not isinstance(item, dict) or item.get("name") not in names:
            return []
        args = item.get("arguments", {})
        if not isinstance(args, dict):
            return []
        calls.append(
            ToolSelection(tool_id=f"call_{uuid.uuid4().hex[:24]}", tool_name=item["name"], tool_kwargs=args)
        )
    return calls
