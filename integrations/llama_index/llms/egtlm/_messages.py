"""LlamaIndex chat messages and tools -> the {"role", "content"} dicts `EgtLM.chat` renders.

The tool prompt, the call parser and the words for calls and results in the history are the core's
(`egtlm_core.generation.tools`, shared with the LangChain adapter and the server); this module only
maps LlamaIndex's types onto them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from llama_index.core.base.llms.types import ChatMessage, MessageRole
from llama_index.core.llms.llm import ToolSelection

from egtlm_core.generation import (
    parse_calls,
    plan_tools,
    render_tool_call,
    tool_result_line,
    with_tools_prompt,
)

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
            out.append({"role": "user", "content": tool_result_line(name, text)})
            continue
        calls = message.additional_kwargs.get(TOOL_CALLS) or []
        said = [render_tool_call(c.tool_name, c.tool_kwargs) for c in calls]
        content = "\n".join(t for t in [text.strip(), *said] if t) if said else text
        out.append({"role": _ROLES.get(message.role, "user"), "content": content})
    return out


def tool_specs(tools: Sequence[Any]) -> list[dict[str, Any]]:
    """LlamaIndex tools -> OpenAI-style function tools (what `tool_call_schema` takes)."""
    return [{"type": "function", "function": tool.metadata.to_openai_tool()["function"]} for tool in tools]


def with_tools(
    messages: list[dict[str, str]], specs: Sequence[dict[str, Any]], required: bool
) -> list[dict[str, str]]:
    """The core tool description (`egtlm_core.generation.tools`) in the system message."""
    plan = plan_tools(specs, "required" if required else "auto")
    return messages if plan is None else with_tools_prompt(messages, plan)


def parse_tool_calls(text: str, names: set[str]) -> list[ToolSelection]:
    """The calls in an answer that is a JSON call (or a list of them) to known tools; else []."""
    calls = parse_calls(text, names) or []
    return [ToolSelection(tool_id=c.id, tool_name=c.name, tool_kwargs=c.arguments) for c in calls]
