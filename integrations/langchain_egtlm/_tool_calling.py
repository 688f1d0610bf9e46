"""Tool calling for `ChatEgtLM`: the core's prompt + grammar scheme (`egtlm_core.generation.tools`),
with parsed calls in LangChain's tool-call shape."""

from __future__ import annotations

from typing import Any

from egtlm_core.generation import (
    ToolPlan,
    looks_like_call,
    new_call_id,
    parse_calls,
    plan_tools,
    tools_prompt,
    with_tools_prompt,
)

__all__ = [
    "ToolPlan",
    "looks_like_call",
    "new_call_id",
    "parse_tool_calls",
    "plan_tools",
    "tools_prompt",
    "with_tools_prompt",
]


def parse_tool_calls(text: str, names: set[str]) -> list[dict[str, Any]] | None:
    """LangChain tool calls if the whole answer is a call (or a list of calls) to known tools."""
    calls = parse_calls(text, names)
    if calls is None:
        return None
    return [{"name": c.name, "args": c.arguments, "id": c.id, "type": "tool_call"} for c in calls]
