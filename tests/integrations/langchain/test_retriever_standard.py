"""LangChain's standard retriever suite against the real default model, over Chroma and the own index."""

from __future__ import annotations

import functools
import uuid
from typing import Any

import pytest
from langchain_egtlm.retrievers import EgtLMCacheRetriever
from langchain_tests.integration_tests import RetrieversIntegrationTests

TEXTS = [
    "Paris is the capital and most populous city of France.",
    "Berlin is the capital of Germany and its largest city.",
    "The Eiffel Tower is a wrought-iron lattice tower in Paris, 330 metres tall.",
    "Mount Everest is Earth's highest mountain above sea level.",
    "The Amazon is the largest rainforest on Earth.",
]


@functools.cache
def chroma_store() -> Any:
    """One in-memory Chroma collection embedded with EgtLMEmbeddings, states stored (built once)."""
    import chromadb
    from langchain_chroma import Chroma
    from langchain_egtlm.embeddings import EgtLMEmbeddings

    client = chromadb.EphemeralClient()
    store = Chroma(f"std-{uuid.uuid4().hex[:8]}", embedding_function=EgtLMEmbeddings(), client=client)
    EgtLMCacheRetriever(vectorstore=store).add_texts(TEXTS)
    return store


@functools.cache
def indexed_lm() -> Any:
    """The default model and a DocumentIndex holding the texts (built once)."""
    retriever = EgtLMCacheRetriever()
    retriever.add_texts(TEXTS)
    return retriever.lm, retriever.document_index or retriever._index


# The suite's async test needs pytest-asyncio; the mark runs it in strict mode (the sync tests only
# warn about it, silenced here).
@pytest.mark.asyncio
@pytest.mark.filterwarnings("ignore:.*marked with '@pytest.mark.asyncio' but it is not an async function")
class _Suite(RetrieversIntegrationTests):
    @property
    def retriever_constructor(self) -> type[EgtLMCacheRetriever]:
        return EgtLMCacheRetriever


@pytest.mark.slow
class TestEgtLMCacheRetrieverChroma(_Suite):
    @property
    def retriever_constructor_params(self) -> dict[str, Any]:
        return {"vectorstore": chroma_store(), "k": 2}

    @property
    def retriever_query_example(self) -> str:
        return "What is the capital of France?"


@pytest.mark.slow
class TestEgtLMCacheRetrieverOwnIndex(_Suite):
    @property
    def retriever_constructor_params(self) -> dict[str, Any]:
        lm, index = indexed_lm()
        return {"model": lm, "document_index": index, "k": 2}

    @property
    def retriever_query_example(self) -> str:
        return "How tall is the Eiffel Tower?"
