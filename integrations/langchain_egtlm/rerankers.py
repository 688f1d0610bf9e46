"""`EgtLMReranker`: a LangChain document compressor that reranks with the model that also answers.

It scores each retrieved document with the generator (`EgtLM.rerank`: P("yes") to a relevance
prompt, or the query likelihood) and keeps the best `top_n`. Documents come back unchanged but for
`metadata["relevance_score"]`, so the kept ones still carry their stored KV states' handle and a
`ChatEgtLM` later in the chain splices them as before. Same settings as the retriever and the chat
model: the same process-wide `EgtLM`, one copy of the weights.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from pydantic import ConfigDict, Field, PrivateAttr

try:
    from langchain_core.callbacks import Callbacks
    from langchain_core.documents import BaseDocumentCompressor, Document
except ImportError as e:  # pragma: no cover - the extra is missing
    raise ImportError("langchain_egtlm needs langchain-core: pip install 'egtlm[langchain]'") from e

from egtlm_core import EgtLM
from egtlm_core.adapter_kit import LazyLM

RELEVANCE = "relevance_score"  # metadata: the reranker's score (LangChain's rerankers use this key)


class EgtLMReranker(BaseDocumentCompressor):
    """Rerank retrieved documents with the shared egtlm model and keep the best `top_n`.

    Args:
        model: an `EgtLM`, a model path / hub id, or None for the packaged default (as for
            `ChatEgtLM` and `EgtLMCacheRetriever`: the same settings share one model).
        model_kwargs: `EgtLM` loading arguments (torch_dtype, device, ...).
        top_n: documents kept (None: all, reordered).
        prompt: an `egtlm_core.rerank.RerankPrompt` or `QueryLikelihoodPrompt` (None: the default
            yes/no relevance prompt).
        rerank_kwargs: more `PointwiseReranker` options (batch_size, max_document_tokens).

    Example:
        >>> reranker = EgtLMReranker(top_n=2)
        >>> docs = retriever.invoke(question)
        >>> reranker.compress_documents(docs, question)[0].metadata["relevance_score"]
    """

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    model: Any = None
    """An `EgtLM`, a model path or hub id, or None for the packaged default."""
    model_kwargs: dict[str, Any] = Field(default_factory=dict)
    """`EgtLM` constructor arguments when the model is built here."""
    top_n: int | None = Field(default=3, ge=1)
    """Documents kept, best first (None: all of them, reordered)."""
    prompt: Any = None
    """The relevance prompt (`egtlm_core.rerank.RerankPrompt` / `QueryLikelihoodPrompt`); None: default."""
    rerank_kwargs: dict[str, Any] = Field(default_factory=dict)
    """Further `egtlm_core.rerank.PointwiseReranker` options (batch_size, max_document_tokens)."""

    _client: LazyLM = PrivateAttr()

    def model_post_init(self, context: Any, /) -> None:
        self._client = LazyLM(self.model, model_kwargs=self.model_kwargs)

    @property
    def lm(self) -> EgtLM:
        """The `EgtLM` that scores (loaded on first use)."""
        return self._client.get()

    def compress_documents(
        self, documents: Sequence[Document], query: str, callbacks: Callbacks | None = None
    ) -> Sequence[Document]:
        """The `top_n` documents most relevant to `query`, best first, each with its score."""
        documents = list(documents)
        if not documents:
            return []
        options = {**self.rerank_kwargs, **({"prompt": self.prompt} if self.prompt is not None else {})}
        ranked = self.lm.rerank(query, [d.page_content for d in documents], top_n=self.top_n, **options)
        return [
            documents[r.index].model_copy(
                update={"metadata": {**documents[r.index].metadata, RELEVANCE: r.score}}
            )
            for r in ranked
        ]

    async def acompress_documents(
        self, documents: Sequence[Document], query: str, callbacks: Callbacks | None = None
    ) -> Sequence[Document]:
        """`compress_documents` off the event loop."""
        return await asyncio.to_thread(self.compress_documents, documents, query, callbacks)
