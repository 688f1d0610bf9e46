"""Chroma integration of egtlm: an embedding function that a persisted collection rebuilds by name.

from chromadb_egtlm import EgtLMEmbeddingFunction

Importing this package registers the function as "egtlm" with Chroma; import it before opening a
collection made with it, so Chroma can rebuild the function from the collection's stored config.
"""

from __future__ import annotations

from .embedding_function import EgtLMEmbeddingFunction
from .ray_index import index_collection_on_ray

__all__ = ["EgtLMEmbeddingFunction", "index_collection_on_ray"]
