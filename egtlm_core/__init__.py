"""egtlm core: one decoder model that embeds and generates (no RAG framework imported here).

Public names only; the subpackages show the architecture (see docs/architecture.md).
"""

from __future__ import annotations

from .cache import CacheKey, CacheTier, DiskTier, MemoryTier, TieredStore
from .config import EgtLMConfig
from .embedding.prompts import document_text, format_instruction
from .generation.chat import ChatResult, ChatStream
from .generation.constrained import JsonGrammar, json_grammar, tool_call_schema
from .generation.tools import ToolCall
from .loading.default_model import DEFAULT_MODEL_NAME, default_model_dir
from .model import EgtLM, GenerationOptions
from .rag.document_cache import DocumentCache, HandedOut
from .rag.engine import AnswerResult
from .rag.index import DocumentIndex, IndexedDocument, ScoredDocument, check_k
from .rag.kv_reuse import RECOMPUTE_TOKENS
from .shared import LazyLM, display_name, shared_lm

__all__ = [
    "AnswerResult",
    "CacheKey",
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
    "HandedOut",
    "IndexedDocument",
    "JsonGrammar",
    "LazyLM",
    "MemoryTier",
    "RECOMPUTE_TOKENS",
    "ScoredDocument",
    "TieredStore",
    "ToolCall",
    "check_k",
    "default_model_dir",
    "display_name",
    "document_text",
    "format_instruction",
    "json_grammar",
    "shared_lm",
    "tool_call_schema",
]
__version__ = "0.1.0"
