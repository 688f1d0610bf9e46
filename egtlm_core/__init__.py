"""egtlm core: one decoder model that embeds and generates (no RAG framework imported here)."""

from __future__ import annotations

from .config import EgtLMConfig
from .embedding.prompts import document_text, format_instruction
from .generation.chat import ChatResult
from .model import EgtLM

__all__ = ["ChatResult", "EgtLM", "EgtLMConfig", "document_text", "format_instruction"]
__version__ = "0.1.0"
