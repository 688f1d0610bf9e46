"""`EgtLMReranker` (a LangChain `BaseDocumentCompressor`) on a tiny random model: it orders by the
core reranker's scores, shares the one model, and after it a `ChatEgtLM` still splices the kept
documents' stored states (reused tokens > 0)."""

from __future__ import annotations

import asyncio

import pytest
from langchain_core.documents import BaseDocumentCompressor, Document
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableLambda, RunnablePassthrough
from langchain_egtlm import ChatEgtLM, EgtLMCacheRetriever, EgtLMReranker

from egtlm_core.cache import MemoryTier
from egtlm_core.rerank import QueryLikelihoodPrompt

# Texts the tiny tokenizer splits cleanly after "\n\n" (one that merges across the boundary is not
# found in the prompt, with or without reranking: the core's matching, not the reranker).
DOCS = [
    "Paris is the capital of France. Berlin is the capital of Germany.",
    "Numbers like 12345 and words like don't, can't and it's.",
    "A cat sat on the mat while the dog slept by the fire.",
    "Retrieval augmented generation reads documents before answering questions.",
]
QUESTION = "What is the capital of France?"
PROMPT = ChatPromptTemplate.from_messages([("human", "Context:\n{context}\n\nQuestion: {question}")])


@pytest.fixture(scope="module")
def settings(tiny_llama_dir) -> dict:
    # One RAM store object in every adapter's settings: the same shared EgtLM, nothing on disk.
    return {
        "model": str(tiny_llama_dir),
        "model_kwargs": {"torch_dtype": "float32", "cache_store": MemoryTier()},
    }


def test_is_a_document_compressor_and_orders_by_the_core_scores(settings):
    reranker = EgtLMReranker(**settings, top_n=None)
    assert isinstance(reranker, BaseDocumentCompressor)
    docs = [Document(page_content=t, metadata={"n": i}) for i, t in enumerate(DOCS)]
    out = reranker.compress_documents(docs, QUESTION)
    expected = reranker.lm.rerank(QUESTION, DOCS)
    assert [d.metadata["n"] for d in out] == [r.index for r in expected]
    assert [d.metadata["relevance_score"] for d in out] == [r.score for r in expected]
    assert [d.page_content for d in out] == [DOCS[r.index] for r in expected]  # texts untouched
    assert len(EgtLMReranker(**settings, top_n=2).compress_documents(docs, QUESTION)) == 2
    assert reranker.compress_documents([], QUESTION) == []


def test_prompt_and_async(settings):
    docs = [Document(page_content=t) for t in DOCS]
    reranker = EgtLMReranker(**settings, top_n=4, prompt=QueryLikelihoodPrompt())
    expected = reranker.lm.rerank(QUESTION, DOCS, prompt=QueryLikelihoodPrompt())
    got = asyncio.run(reranker.acompress_documents(docs, QUESTION))
    assert [d.metadata["relevance_score"] for d in got] == [r.score for r in expected]
    with pytest.raises(ValueError):
        EgtLMReranker(**settings, top_n=0)


def test_reranking_in_a_chain_keeps_cache_reuse(settings):
    retriever = EgtLMCacheRetriever.from_texts(DOCS, k=3, prompt=PROMPT, **settings)
    reranker = EgtLMReranker(**settings, top_n=2)
    llm = ChatEgtLM(**settings, max_tokens=8, temperature=0, reuse_cache=True)
    assert reranker.lm is retriever.lm is llm.client  # one model, one shared cache

    kept: list[Document] = []

    def retrieve_and_rerank(question: str) -> str:
        kept[:] = reranker.compress_documents(retriever.invoke(question), question)
        return "\n\n".join(d.page_content for d in kept)

    chain = {"context": RunnableLambda(retrieve_and_rerank), "question": RunnablePassthrough()} | PROMPT | llm
    answer = chain.invoke(QUESTION)
    stats = answer.response_metadata["egtlm"]
    assert len(kept) == 2 and all("egtlm_cache_key" in d.metadata for d in kept)
    assert stats["reused_tokens"] > 0 and stats["misses"] == 0
    assert stats["exact_slots"] + stats["approximate_slots"] == 2  # both kept documents spliced
