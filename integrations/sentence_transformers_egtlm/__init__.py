"""sentence-transformers integration of egtlm: an `EgtLM` as a `SentenceTransformer`.

from sentence_transformers_egtlm import EgtLMEncoder, to_sentence_transformer
"""

from __future__ import annotations

from .builder import to_sentence_transformer
from .encoder import EgtLMEncoder

__all__ = ["EgtLMEncoder", "to_sentence_transformer"]
