"""LlamaIndex embeddings from egtlm: `from llama_index.embeddings.egtlm import EgtLMEmbedding`."""

from __future__ import annotations

from .base import EgtLMEmbedding

__all__ = ["EgtLMEmbedding"]
