"""LangChain integration of egtlm: one model embeds, retrieves with stored KV states, and answers.

from langchain_egtlm import ChatEgtLM, EgtLMCacheRetriever, EgtLMEmbeddings, EgtLMReranker
"""

from __future__ import annotations

from .chat_models import ChatEgtLM
from .embeddings import EgtLMEmbeddings
from .rerankers import EgtLMReranker
from .retrievers import EgtLMCacheRetriever

__all__ = ["ChatEgtLM", "EgtLMCacheRetriever", "EgtLMEmbeddings", "EgtLMReranker"]
