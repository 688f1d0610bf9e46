"""LlamaIndex LLM from egtlm: `from llama_index.llms.egtlm import EgtLMLLM`."""

from __future__ import annotations

from ._report import collect_reports
from .base import EgtLMLLM

__all__ = ["EgtLMLLM", "collect_reports"]
