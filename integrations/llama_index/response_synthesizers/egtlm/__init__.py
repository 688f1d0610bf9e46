"""The shared KV cache in a LlamaIndex query engine: `from llama_index.response_synthesizers.egtlm
import EgtLMSynthesizer`, then `index.as_query_engine(response_synthesizer=EgtLMSynthesizer(llm))`."""

from __future__ import annotations

from .base import EgtLMSynthesizer

__all__ = ["EgtLMSynthesizer"]
