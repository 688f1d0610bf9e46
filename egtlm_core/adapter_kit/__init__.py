"""What framework adapters and servers build on, beside the user API in `egtlm_core`.

`egtlm_core.__all__` is what a user imports (`EgtLM`, its options and results, the document cache,
cache tiers). The names here are plumbing for code that wraps `EgtLM` in another framework's types:
lazy shared models for cheap construction, running blocking calls off an event loop, rendering
tool calls in a chat transcript, and `encode`'s own batching/forward/pooling steps for a
framework that runs its own batches (the sentence-transformers module; `length_sorted_batches`
with `EgtLM.max_batch_tokens` groups texts as `encode` does), and indexing on Ray Data for a vector
store's adapter (`index_on_ray`, `RayIndexOptions`: Ray is imported only when it runs). The layout test lets
`integrations/` import only `egtlm_core` and this package.
"""

from __future__ import annotations

from ..cache import CacheKey
from ..embedding import check_texts, forward_states, pad_batch, pool, warn_truncated
from ..embedding.encoding import length_sorted_batches
from ..generation import (
    iterate_in_thread,
    new_call_id,
    plan_tools,
    render_tool_call,
    run_in_thread,
    tool_result_line,
    tool_results_turn,
)
from ..generation.constrained import JsonGrammar, json_grammar, tool_call_schema
from ..rag.document_cache import HandedOut
from ..rag.index import check_k
from ..scale.ray_index import RayIndexOptions, index_on_ray
from ..shared import LazyLM, display_name, shared_lm

__all__ = [
    "CacheKey",
    "HandedOut",
    "JsonGrammar",
    "LazyLM",
    "RayIndexOptions",
    "check_k",
    "check_texts",
    "display_name",
    "forward_states",
    "index_on_ray",
    "iterate_in_thread",
    "json_grammar",
    "length_sorted_batches",
    "new_call_id",
    "pad_batch",
    "plan_tools",
    "pool",
    "render_tool_call",
    "run_in_thread",
    "shared_lm",
    "tool_call_schema",
    "tool_result_line",
    "tool_results_turn",
    "warn_truncated",
]
