"""Generation: chat on `generate` (stop strings, streaming, usage) and grammar-constrained decoding.

The names below are the framework-free pieces adapters and the server share: tool calling by
prompt + grammar (`tools.py`) and the asyncio bridge to blocking generation (`async_bridge.py`).
"""

from .async_bridge import iterate_in_thread, run_in_thread
from .tools import (
    ToolCall,
    ToolPlan,
    looks_like_call,
    new_call_id,
    parse_calls,
    plan_tools,
    render_tool_call,
    tool_result_line,
    tool_results_turn,
    tools_prompt,
    with_tools_prompt,
)

__all__ = [
    "ToolCall",
    "ToolPlan",
    "iterate_in_thread",
    "looks_like_call",
    "new_call_id",
    "parse_calls",
    "plan_tools",
    "render_tool_call",
    "run_in_thread",
    "tool_result_line",
    "tool_results_turn",
    "tools_prompt",
    "with_tools_prompt",
]
