"""egtlm core: one decoder model that embeds and generates (no RAG framework imported here).

Public names only; the subpackages show the architecture (see docs/architecture.md).
"""

from __future__ import annotations

from .cache import CacheKey, CacheTier, DiskTier, MemoryTier, TieredStore  # noqa: F401
from .config import EgtLMConfig
from .embedding.prompts import document_text, format_instruction
from .generation.chat import ChatResult, ChatStream
from .generation.constrained import JsonGrammar, json_grammar, tool_call_schema  # noqa: F401
from .generation.tools import ToolCall
from .loading.default_model import DEFAULT_MODEL_NAME, default_model_dir
from .model import EgtLM, GenerationOptions
from .rag.document_cache import DocumentCache, HandedOut  # noqa: F401 (HandedOut: adapter_kit)
from .rag.engine import AnswerResult
from .rag.index import DocumentIndex, IndexedDocument, ScoredDocument, check_k  # noqa: F401
from .rag.kv_reuse import RECOMPUTE_TOKENS
from .shared import LazyLM, display_name, shared_lm  # noqa: F401

# What a user imports. Adapter plumbing (LazyLM, shared_lm, check_k, tool-call rendering, ...) is in
# `egtlm_core.adapter_kit`; those names stay importable here for older code, but are not the API.
__all__ = [
    "AnswerResult",
    "CacheTier",
    "ChatResult",
    "ChatStream",
    "DEFAULT_MODEL_NAME",
    "DiskTier",
    "DocumentCache",
    "DocumentIndex",
    "EgtLM",
    "EgtLMConfig",
    "GenerationOptions",
    "IndexedDocument",
    "MemoryTier",
    "RECOMPUTE_TOKENS",
    "ScoredDocument",
    "TieredStore",
    "ToolCall",
    "default_model_dir",
    "document_text",
    "format_instruction",
]
__version__ = "0.1.0"
