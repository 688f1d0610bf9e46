"""`EgtLMCacheRetriever` on tiny random models: indexing, per-call k, state handles, capture prefix."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from langchain_core.documents import Document
from langchain_core.embeddings import DeterministicFakeEmbedding
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.vectorstores import InMemoryVectorStore
from langchain_egtlm.retrievers import CACHE_KEY, CACHED, EgtLMCacheRetriever

from egtlm_core import EgtLM
from egtlm_core.cache import MemoryTier

DOCS = [
    "Paris is the capital of France. Berlin is the capital of Germany.",
    "The quick brown fox jumps over the lazy dog.",
    "A cat sat on the mat while the dog slept by the fire.",
    "Retrieval augmented generation reads documents before answering questions.",
]
QUESTION = "What is the capital of France?"
PROMPT = ChatPromptTemplate.from_messages(
    [("system", "Answer from the context."), ("human", "Context:\n{context}\n\nQuestion: {question}")]
)


@pytest.fixture
def tiny_lm(tiny_llama_dir) -> EgtLM:
    return EgtLM(str(tiny_llama_dir), torch_dtype="float32", cache_store=MemoryTier())


@pytest.fixture
def fake_store() -> InMemoryVectorStore:
    return InMemoryVectorStore(DeterministicFakeEmbedding(size=16))


def test_construction_is_cheap_and_loads_nothing():
    start = time.perf_counter()
    retrievers = [EgtLMCacheRetriever(k=i + 1) for i in range(10)]
    assert time.perf_counter() - start < 1.0
    assert not any(r._client.loaded for r in retrievers)


def test_own_index_k_in_constructor_and_per_call(tiny_lm):
    retriever = EgtLMCacheRetriever.from_texts(
        DOCS, metadatas=[{"n": i} for i in range(4)], model=tiny_lm, k=3
    )
    assert len(retriever.invoke(QUESTION)) == 3
    docs = retriever.invoke(QUESTION, k=1)
    assert len(docs) == 1 and isinstance(docs[0], Document)
    assert docs[0].page_content in DOCS and docs[0].metadata["n"] == DOCS.index(docs[0].page_content)
    assert -1.0 <= docs[0].metadata["score"] <= 1.0
    assert len(retriever.invoke(QUESTION, k=10)) == len(DOCS)
    with pytest.raises(ValueError, match="k must be a positive integer"):
        retriever.invoke(QUESTION, k=0)


def test_two_retrievers_on_one_model_keep_their_own_documents(tiny_lm):
    # Before the core DocumentIndex, vectors were shared per model and metadata per retriever, so
    # each retriever saw the other's vectors without their metadata.
    mine = EgtLMCacheRetriever.from_texts(DOCS[:2], metadatas=[{"owner": "me"}] * 2, model=tiny_lm, k=4)
    yours = EgtLMCacheRetriever.from_texts(DOCS[2:], metadatas=[{"owner": "you"}] * 2, model=tiny_lm, k=4)
    assert {d.page_content for d in mine.invoke(QUESTION)} == set(DOCS[:2])
    assert {d.metadata["owner"] for d in yours.invoke(QUESTION)} == {"you"}


def test_delete_and_re_add_replace_documents_and_states(tiny_lm):
    retriever = EgtLMCacheRetriever(model=tiny_lm, k=4)
    retriever.add_texts(DOCS[:2], ids=["a", "b"])
    retriever.add_texts([DOCS[3]], ids=["a"])  # same id, new text: replaced, not duplicated
    assert {d.page_content for d in retriever.invoke(QUESTION)} == {DOCS[3], DOCS[1]}
    store = tiny_lm._rag.store
    assert not store.contains(tiny_lm._rag.cache_keys([DOCS[0]])[0])
    retriever.delete(["b"])
    assert [d.id for d in retriever.invoke(QUESTION)] == ["a"]
    assert not store.contains(tiny_lm._rag.cache_keys([DOCS[1]])[0])


def test_documents_keep_their_own_ids_and_the_others_get_one(tiny_lm):
    # As LangChain's vector stores do: a document's own id is kept, a missing one is generated.
    retriever = EgtLMCacheRetriever(model=tiny_lm, k=4)
    assert retriever.add_documents([Document(DOCS[0], id="x"), Document(DOCS[1], id="y")]) == ["x", "y"]
    mixed = retriever.add_documents([Document(DOCS[2], id="z"), Document(DOCS[3])])
    assert mixed[0] == "z" and mixed[1] not in {"x", "y", "z", ""}
    assert {d.id for d in retriever.invoke(QUESTION)} == {"x", "y", "z", mixed[1]}
    assert retriever.add_documents([Document(DOCS[0], id="x")], ids=["w"]) == ["w"]


def test_documents_carry_the_handle_of_their_stored_states(tiny_lm):
    retriever = EgtLMCacheRetriever(model=tiny_lm, k=4)
    ids = retriever.add_texts(DOCS)
    assert len(set(ids)) == len(DOCS)
    docs = retriever.invoke(QUESTION)
    keys = tiny_lm._rag.cache_keys([d.page_content for d in docs])
    for doc, key in zip(docs, keys, strict=True):
        assert doc.metadata[CACHE_KEY] == key.to_string() and doc.metadata[CACHED] is True
        assert tiny_lm._rag.store.contains(key)
    assert set(DOCS) <= {d.text for d in tiny_lm._rag.known_documents()}  # the chat model will look for them


def test_vector_store_receives_documents_and_search_kwargs(tiny_lm, fake_store):
    retriever = EgtLMCacheRetriever(vectorstore=fake_store, model=tiny_lm, k=2)
    docs = [Document(page_content=t, metadata={"n": i}) for i, t in enumerate(DOCS)]
    ids = retriever.add_documents(docs, ids=[f"d{i}" for i in range(4)])
    assert ids == ["d0", "d1", "d2", "d3"] and len(fake_store.store) == 4
    assert all(tiny_lm._rag.store.contains(k) for k in tiny_lm._rag.cache_keys(DOCS))
    found = retriever.invoke(QUESTION, k=3, filter=lambda d: d.metadata["n"] != 0)
    assert len(found) == 3 and all(d.metadata["n"] != 0 and CACHE_KEY in d.metadata for d in found)


def test_documents_added_elsewhere_are_remembered_and_captured_later(tiny_lm, fake_store):
    fake_store.add_texts(DOCS)  # populated without the retriever: no states stored yet
    retriever = EgtLMCacheRetriever(vectorstore=fake_store, model=tiny_lm, k=2)
    docs = retriever.invoke(QUESTION)
    assert [d.metadata[CACHED] for d in docs] == [False, False]
    assert {d.page_content for d in docs} <= {d.text for d in tiny_lm._rag.known_documents()}


def test_capture_states_false_stores_nothing(tiny_lm, fake_store):
    retriever = EgtLMCacheRetriever(vectorstore=fake_store, model=tiny_lm, capture_states=False)
    retriever.add_texts(DOCS)
    assert len(tiny_lm._rag.store) == 0


def test_prompt_sets_the_capture_prefix_to_the_text_before_the_documents(tiny_lm):
    retriever = EgtLMCacheRetriever(model=tiny_lm, prompt=PROMPT, k=1)
    head = retriever.capture_prefix()
    rendered = tiny_lm.document_cache.render_prompt(
        [
            {"role": "system", "content": "Answer from the context."},
            {"role": "user", "content": f"Context:\n{DOCS[0]}\n\nQuestion: {QUESTION}"},
        ]
    )
    assert head and rendered.startswith(head + DOCS[0])
    retriever.add_texts(DOCS)
    doc = retriever.invoke(QUESTION)[0]
    (key,) = tiny_lm._rag.cache_keys([doc.page_content], head)
    assert doc.metadata[CACHE_KEY] == key.to_string() and tiny_lm._rag.store.contains(key)
    (default_key,) = tiny_lm._rag.cache_keys([doc.page_content])
    assert default_key != key and not tiny_lm._rag.store.contains(default_key)


def test_prompt_must_put_the_documents_before_other_variables(tiny_lm):
    late = ChatPromptTemplate.from_messages([("human", "Question: {question}\nContext:\n{context}")])
    with pytest.raises(ValueError, match="before"):
        EgtLMCacheRetriever(model=tiny_lm, prompt=late).capture_prefix()
    with pytest.raises(ValueError, match="no {context} variable"):
        EgtLMCacheRetriever(model=tiny_lm, prompt=ChatPromptTemplate.from_messages([("human", "{q}")]))


def test_ainvoke_runs_off_the_event_loop(tiny_lm):
    retriever = EgtLMCacheRetriever.from_texts(DOCS, model=tiny_lm, k=2)
    threads: list[int] = []
    original = EgtLMCacheRetriever._search_own_index

    def spy(self, query, k):
        threads.append(threading.get_ident())
        return original(self, query, k)

    async def main():
        EgtLMCacheRetriever._search_own_index = spy  # type: ignore[method-assign]
        try:
            return await asyncio.gather(retriever.ainvoke(QUESTION), retriever.ainvoke(QUESTION, k=1))
        finally:
            EgtLMCacheRetriever._search_own_index = original  # type: ignore[method-assign]

    two, one = asyncio.run(main())
    assert len(two) == 2 and len(one) == 1 and two[0].page_content == one[0].page_content
    assert threads and threading.get_ident() not in threads


def test_ids_and_metadatas_must_match_the_texts(tiny_lm):
    retriever = EgtLMCacheRetriever(model=tiny_lm)
    with pytest.raises(ValueError, match="2 ids for 1 documents"):
        retriever.add_texts(["x"], ids=["a", "b"])
    with pytest.raises(ValueError, match="2 metadatas for 1 texts"):
        retriever.add_texts(["x"], metadatas=[{}, {}])
    assert retriever.add_documents([]) == []


def test_lcel_chain_splices_the_retrieved_documents_exactly(tiny_lm):
    from langchain_core.runnables import RunnablePassthrough
    from langchain_egtlm import ChatEgtLM

    retriever = EgtLMCacheRetriever.from_texts(DOCS, model=tiny_lm, prompt=PROMPT, k=1)

    def chain(reuse_cache: bool):
        llm = ChatEgtLM(model=tiny_lm, max_tokens=6, reuse_cache=reuse_cache)
        context = retriever | (lambda docs: "\n\n".join(d.page_content for d in docs))
        return {"context": context, "question": RunnablePassthrough()} | PROMPT | llm

    reused, full = chain(True).invoke(QUESTION), chain(False).invoke(QUESTION)
    stats = reused.response_metadata["egtlm"]
    assert stats["reused_tokens"] > 0 and stats["hits"] == 2 and stats["misses"] == 0
    assert stats["approximate_hits"] == 0
    assert reused.content == full.content
