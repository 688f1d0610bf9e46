"""LlamaIndex chat messages and tools -> the {"role", "content"} dicts and OpenAI tools `EgtLM.chat` takes.

The tool prompt, the grammar, the call parser and the words for calls and results in the history are
the core's (`EgtLM.chat(tools=...)`, `egtlm_core.generation.tools`, shared with the LangChain adapter
and the server); this module only maps LlamaIndex's types onto them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from llama_index.core.base.llms.types import ChatMessage, MessageRole

from egtlm_core.adapter_kit import render_tool_call, tool_result_line

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
    """LlamaIndex tools -> OpenAI-style function tools (what `EgtLM.chat(tools=...)` takes)."""
    return [{"type": "function", "function": tool.metadata.to_openai_tool()["function"]} for tool in tools]
