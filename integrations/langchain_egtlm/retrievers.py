"""`EgtLMCacheRetriever`: a LangChain retriever whose documents come with stored KV states.

Adding documents embeds them into a vector store (a LangChain `VectorStore` such as Chroma, or the
model's own index) and stores their KV states in the model's shared cache. Retrieved documents carry
the handle of those states (`metadata["egtlm_cache_key"]`) and are remembered by the model, so a
`ChatEgtLM` later in an ordinary LCEL chain finds their text in its prompt and splices the states
instead of prefilling them. The chain itself does not change.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pydantic import ConfigDict, Field, PrivateAttr

try:
    from langchain_core.callbacks import (
        AsyncCallbackManagerForRetrieverRun,
        CallbackManagerForRetrieverRun,
    )
    from langchain_core.documents import Document
    from langchain_core.prompts import BasePromptTemplate
    from langchain_core.retrievers import BaseRetriever
    from langchain_core.vectorstores import VectorStore
except ImportError as e:  # pragma: no cover - the extra is missing
    raise ImportError("langchain_egtlm needs langchain-core: pip install 'egtlm[langchain]'") from e

from egtlm_core import DocumentIndex, EgtLM
from egtlm_core.adapter_kit import LazyLM, check_k

from ._messages import to_chat_messages

CACHE_KEY = "egtlm_cache_key"  # metadata: the store key of the document's KV states (CacheKey string)
CACHED = "egtlm_cached"  # metadata: whether those states are in the store now
SCORE = "score"  # metadata (own index only): cosine similarity to the query


class EgtLMCacheRetriever(BaseRetriever):
    """Retrieve documents whose KV states a `ChatEgtLM` in the same chain reuses.

    Args:
        vectorstore: where vectors live (e.g. `langchain_chroma.Chroma(embedding_function=
            EgtLMEmbeddings())`); None keeps them in this retriever's own `egtlm_core.DocumentIndex`.
        model: an `EgtLM`, a model path / hub id, or None for the packaged default: the model whose
            shared cache stores the states, so the same one (and `model_kwargs`) as the chat model's.
        model_kwargs: `EgtLM` loading arguments (torch_dtype, device, ...) as given to `ChatEgtLM`.
        k: documents per query (also per call: `retriever.invoke(q, k=2)`).
        search_kwargs: passed to `vectorstore.similarity_search` (e.g. `{"filter": ...}`).
        prompt: the chain's prompt. Documents are then captured after the prompt's text before
            `{context}`, so the first retrieved document's states are exactly what a full prefill
            computes; without it they are captured after egtlm's default RAG prefix and reused as
            approximate hits.
        context_variable: the prompt variable the formatted documents fill.
        capture_states: store KV states when documents are added (else the chat model captures them
            on first use).

    Example:
        >>> from langchain_chroma import Chroma
        >>> from langchain_egtlm import ChatEgtLM, EgtLMCacheRetriever, EgtLMEmbeddings
        >>> store = Chroma("docs", embedding_function=EgtLMEmbeddings())
        >>> retriever = EgtLMCacheRetriever(vectorstore=store, k=2)
        >>> retriever.add_texts(["Paris is the capital of France.", "Berlin is in Germany."])
        >>> retriever.invoke("capital of France?", k=1)[0].metadata["egtlm_cache_key"]
    """

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    vectorstore: VectorStore | None = None
    """Where the vectors live; None: this retriever's own in-memory `DocumentIndex`."""
    model: Any = None
    """An `EgtLM`, a model path or hub id, or None for the packaged default (as for `ChatEgtLM`)."""
    model_kwargs: dict[str, Any] = Field(default_factory=dict)
    """`EgtLM` constructor arguments (torch_dtype, device, ...) when the model is built here."""
    k: int = Field(default=4, ge=1)
    """Documents returned per query."""
    search_kwargs: dict[str, Any] = Field(default_factory=dict)
    """Extra arguments for `vectorstore.similarity_search`."""
    prompt: BasePromptTemplate | None = None
    """The chain's prompt, to capture documents after its text before `{context}` (exact first slot)."""
    context_variable: str = "context"
    """The prompt variable the formatted documents fill."""
    capture_states: bool = True
    document_index: DocumentIndex | None = None
    """Without a vectorstore: the `egtlm_core.DocumentIndex` to use (share one between retrievers on
    purpose); None gives this retriever its own, empty one."""
    """Store documents' KV states when they are added."""

    _client: LazyLM = PrivateAttr()
    _prefix: tuple[str | None] | None = PrivateAttr(default=None)
    _index: DocumentIndex = PrivateAttr()  # used without a vectorstore
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    def model_post_init(self, context: Any, /) -> None:
        if self.prompt is not None and self.context_variable not in self.prompt.input_variables:
            raise ValueError(
                f"The prompt has no {{{self.context_variable}}} variable (it has "
                f"{self.prompt.input_variables}); set context_variable to the one the documents fill."
            )
        self._index = self.document_index if self.document_index is not None else DocumentIndex()
        # Lazy: the process-wide EgtLM a ChatEgtLM with these settings uses (one shared-cache engine).
        self._client = LazyLM(self.model, model_kwargs=self.model_kwargs)

    # --- the model and the capture prefix, resolved on first use ----------------------------------
    @property
    def lm(self) -> EgtLM:
        """The `EgtLM` whose shared cache holds the documents' states (loaded on first use)."""
        return self._client.get()

    def capture_prefix(self) -> str | None:
        """The rendered prompt text documents are captured after (None: egtlm's default RAG prefix)."""
        lm = self.lm
        with self._lock:
            if self._prefix is None:
                self._prefix = (None if self.prompt is None else self._prompt_head(lm),)
            return self._prefix[0]

    def _prompt_head(self, lm: EgtLM) -> str:
        assert self.prompt is not None
        prompt, cache = self.prompt, lm.document_cache

        def render(markers: Mapping[str, str]) -> str:  # as ChatEgtLM renders the chain's prompt
            return cache.render_prompt(to_chat_messages(prompt.format_prompt(**markers).to_messages()))

        return cache.capture_head(render, list(prompt.input_variables), self.context_variable)

    # --- adding documents -------------------------------------------------------------------------
    def add_documents(self, documents: Sequence[Document], ids: Sequence[str] | None = None) -> list[str]:
        """Add documents to the vector store (or the own index) and store their KV states; -> ids."""
        documents = list(documents)
        if ids is not None and len(ids) != len(documents):
            raise ValueError(f"Got {len(ids)} ids for {len(documents)} documents.")
        if not documents:
            return []
        if self.vectorstore is None:
            return self.lm.document_cache.add(
                [d.page_content for d in documents],
                ids if ids is not None else [d.id for d in documents],  # each may carry its own id
                [d.metadata for d in documents],
                index=self._index,
                prefix=self.capture_prefix(),
                capture_states=self.capture_states,
            )
        kwargs = {"ids": list(ids)} if ids is not None else {}
        doc_ids = self.vectorstore.add_documents(documents, **kwargs)
        if self.capture_states:
            self.lm.document_cache.capture([d.page_content for d in documents], self.capture_prefix())
        return list(doc_ids)

    def delete(self, ids: Sequence[str]) -> None:
        """Remove documents (from the vector store or the own index) and drop their stored states."""
        ids = list(ids)
        if self.vectorstore is None:
            self.lm.document_cache.delete(ids, index=self._index, prefix=self.capture_prefix())
            return
        found = self.vectorstore.get_by_ids(ids)
        self.vectorstore.delete(ids)
        self.lm.document_cache.forget([d.page_content for d in found], self.capture_prefix())

    def add_texts(
        self,
        texts: Iterable[str],
        metadatas: Sequence[dict[str, Any]] | None = None,
        ids: Sequence[str] | None = None,
    ) -> list[str]:
        """`add_documents` for plain texts (with optional metadata and ids)."""
        texts = list(texts)
        metas = list(metadatas) if metadatas is not None else [{} for _ in texts]
        if len(metas) != len(texts):
            raise ValueError(f"Got {len(metas)} metadatas for {len(texts)} texts.")
        return self.add_documents(
            [Document(page_content=t, metadata=dict(m)) for t, m in zip(texts, metas, strict=True)], ids
        )

    async def aadd_documents(
        self, documents: Sequence[Document], ids: Sequence[str] | None = None
    ) -> list[str]:
        """`add_documents` off the event loop."""
        return await asyncio.to_thread(self.add_documents, documents, ids)

    @classmethod
    def from_texts(
        cls,
        texts: Iterable[str],
        metadatas: Sequence[dict[str, Any]] | None = None,
        ids: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> EgtLMCacheRetriever:
        """A retriever (fields as keyword arguments) holding these texts, their states stored."""
        retriever = cls(**kwargs)
        retriever.add_texts(texts, metadatas, ids)
        return retriever

    @classmethod
    def from_documents(cls, documents: Sequence[Document], **kwargs: Any) -> EgtLMCacheRetriever:
        """A retriever (fields as keyword arguments) holding these documents, their states stored."""
        retriever = cls(**kwargs)
        retriever.add_documents(documents)
        return retriever

    # --- retrieval --------------------------------------------------------------------------------
    def _get_relevant_documents(
        self,
        query: str,
        *,
        run_manager: CallbackManagerForRetrieverRun,
        k: int | None = None,
        **kwargs: Any,
    ) -> list[Document]:
        k = check_k(self.k if k is None else k)
        if self.vectorstore is not None:
            docs = self.vectorstore.similarity_search(query, k=k, **{**self.search_kwargs, **kwargs})
        else:
            docs = self._search_own_index(query, k)
        return self._with_states(docs)

    async def _aget_relevant_documents(
        self,
        query: str,
        *,
        run_manager: AsyncCallbackManagerForRetrieverRun,
        k: int | None = None,
        **kwargs: Any,
    ) -> list[Document]:
        call = functools.partial(
            self._get_relevant_documents, query, run_manager=run_manager.get_sync(), k=k, **kwargs
        )
        return await asyncio.to_thread(call)

    def _search_own_index(self, query: str, k: int) -> list[Document]:
        return [
            Document(
                page_content=hit.document.text,
                id=hit.document.id,
                metadata={**hit.document.metadata, SCORE: hit.score},
            )
            for hit in self.lm.search(query, k, index=self._index)
        ]

    def _with_states(self, docs: list[Document]) -> list[Document]:
        """Remember the documents for the chat model and attach the handles of their states."""
        if not docs:
            return docs
        handed = self.lm.document_cache.hand_out([d.page_content for d in docs], self.capture_prefix())
        return [
            d.model_copy(update={"metadata": {**d.metadata, CACHE_KEY: h.key.to_string(), CACHED: h.stored}})
            for d, h in zip(docs, handed, strict=True)
        ]
