"""What the shared-cache tests share: three small documents, a question, and a float32 loader."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from egtlm_core import EgtLM
from egtlm_core.cache import CacheTier, MemoryTier

DOCS = [
    "Paris is the capital of France. Berlin is the capital of Germany.",
    "The quick brown fox jumps over the lazy dog.",
    "A cat sat on the mat while the dog slept by the fire.",
]
QUESTION = "What is the capital of France?"


def load(directory: Path, store: CacheTier | None = None, **kwargs: Any) -> EgtLM:
    """An EgtLM in float32 over `store` (a fresh RAM tier when None; an empty tier is falsy)."""
    return EgtLM(
        str(directory),
        torch_dtype="float32",
        cache_store=store if store is not None else MemoryTier(),
        **kwargs,
    )
