"""egtlm core: one decoder model that embeds and generates (no RAG framework imported here).

Public names only; the subpackages show the architecture (see docs/architecture.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .cache import CacheKey, CacheTier, DiskTier, MemoryTier, RedisTier, TieredStore  # noqa: F401
    from .config import EgtLMConfig
    from .embedding.prompts import document_text, format_instruction
    from .generation.chat import ChatResult, ChatStream
    from .generation.constrained import JsonGrammar, json_grammar, tool_call_schema  # noqa: F401
    from .generation.options import RECOMPUTE_TOKENS, GenerationOptions
    from .generation.tools import ToolCall
    from .loading.default_model import DEFAULT_MODEL_NAME, default_model_dir
    from .model import EgtLM
    from .rag.document_cache import DocumentCache, HandedOut  # noqa: F401 (HandedOut: adapter_kit)
    from .rag.engine import AnswerResult
    from .rag.index import DocumentIndex, IndexedDocument, ScoredDocument, check_k  # noqa: F401
    from .rag.shared_index import SharedDocumentIndex
    from .shared import LazyLM, display_name, shared_lm  # noqa: F401

# Each public name and the module it lives in, imported on first use (PEP 562): `import egtlm_core`
# alone, `egtlm --help` and `egtlm ask --server` load neither torch nor transformers (~3-5 s).
_LAZY = {
    "CacheKey": "cache", "CacheTier": "cache", "DiskTier": "cache", "MemoryTier": "cache",
    "RedisTier": "cache", "TieredStore": "cache",
    "EgtLMConfig": "config",
    "document_text": "embedding.prompts", "format_instruction": "embedding.prompts",
    "ChatResult": "generation.chat", "ChatStream": "generation.chat",
    "JsonGrammar": "generation.constrained", "json_grammar": "generation.constrained",
    "tool_call_schema": "generation.constrained",
    "ToolCall": "generation.tools",
    "DEFAULT_MODEL_NAME": "loading.default_model", "default_model_dir": "loading.default_model",
    "EgtLM": "model", "GenerationOptions": "generation.options",
    "DocumentCache": "rag.document_cache", "HandedOut": "rag.document_cache",
    "AnswerResult": "rag.engine",
    "DocumentIndex": "rag.index", "IndexedDocument": "rag.index", "ScoredDocument": "rag.index",
    "check_k": "rag.index", "SharedDocumentIndex": "rag.shared_index",
    "RECOMPUTE_TOKENS": "generation.options",
    "LazyLM": "shared", "display_name": "shared", "shared_lm": "shared",
}  # fmt: skip


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'egtlm_core' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


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
    "RedisTier",
    "ScoredDocument",
    "SharedDocumentIndex",
    "TieredStore",
    "ToolCall",
    "default_model_dir",
    "document_text",
    "format_instruction",
]
__version__ = "0.1.0"
