"""Embedding: instruction prompts, pooling, and the embedding pass.

The pieces of one `EgtLM.encode` call are public so framework modules that run their own batches
(the sentence-transformers module) tokenize, run and pool exactly as `encode` does.
"""

from .encoding import (
    EmbeddingPass,
    TokenizedText,
    forward_states,
    pad_batch,
    tokenize_for_embedding,
    warn_truncated,
)
from .inputs import check_texts
from .pooling import pool
from .prompts import document_text, format_instruction

__all__ = [
    "EmbeddingPass",
    "TokenizedText",
    "check_texts",
    "document_text",
    "format_instruction",
    "forward_states",
    "pad_batch",
    "pool",
    "tokenize_for_embedding",
    "warn_truncated",
]
