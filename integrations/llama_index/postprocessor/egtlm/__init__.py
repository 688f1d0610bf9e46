"""Rerank retrieved nodes with egtlm: `from llama_index.postprocessor.egtlm import EgtLMRerank`, then
`index.as_query_engine(node_postprocessors=[EgtLMRerank(top_n=2)], ...)`."""

from __future__ import annotations

from .base import EgtLMRerank

__all__ = ["EgtLMRerank"]
