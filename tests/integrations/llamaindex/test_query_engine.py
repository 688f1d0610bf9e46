"""The shared cache in a standard LlamaIndex query engine (tiny random model, Chroma on disk).

`index.as_query_engine(llm=..., similarity_top_k=k, response_synthesizer=EgtLMSynthesizer(llm))`:
the synthesizer hands retrieved nodes out and stores their states after the text-QA template's
head, `EgtLMLLM` splices them, and `response.metadata["egtlm"]` reports what was reused.
"""

from __future__ import annotations

import asyncio

import pytest
from li_support import FLOAT32, chroma_index
from llama_index.core.prompts import ChatPromptTemplate
from llama_index.core.response_synthesizers import BaseSynthesizer, CompactAndRefine
from llama_index.embeddings.egtlm import EgtLMEmbedding
from llama_index.llms.egtlm import EgtLMLLM, collect_reports
from llama_index.response_synthesizers.egtlm import EgtLMSynthesizer
from tiny_models import build_tiny_model

from egtlm_core.cache import MemoryTier

DOCS = [
    "Paris is the capital of France. Berlin is the capital of Germany.",
    "The quick brown fox jumps over the lazy dog.",
    "A cat sat on the mat while the dog slept by the fire.",
]
QUESTION = "What is the capital of France?"
OTHER_DOCS = [  # texts no other test hands out (documents handed out on the same weights are shared)
    "Madrid is the capital of Spain and Lisbon is the capital of Portugal.",
    "Numbers like 12345 and words like don't, can't and it's.",
]


@pytest.fixture(scope="module")
def kwargs(tiny_llama_dir) -> dict:
    # One RAM store object in both adapters' settings: the same shared EgtLM, nothing on disk.
    return {"model": str(tiny_llama_dir), "model_kwargs": {**FLOAT32, "cache_store": MemoryTier()}}


@pytest.fixture(scope="module")
def llm(kwargs) -> EgtLMLLM:
    # The tiny model's 512 positions cannot hold LlamaIndex's 500-token answer padding; prompts fit.
    return EgtLMLLM(**kwargs, max_new_tokens=8, context_window=2048)


@pytest.fixture(scope="module")
def index(kwargs, tmp_path_factory):
    return chroma_index(tmp_path_factory.mktemp("chroma"), DOCS, EgtLMEmbedding(**kwargs))


def engine(index, llm, k: int = 2, **synth_kwargs):
    synth = EgtLMSynthesizer(llm, **synth_kwargs)
    return index.as_query_engine(llm=llm, similarity_top_k=k, response_synthesizer=synth)


def test_synthesizer_is_llamaindexs_and_needs_egtlm(llm):
    assert issubclass(EgtLMSynthesizer, CompactAndRefine) and issubclass(EgtLMSynthesizer, BaseSynthesizer)
    with pytest.raises(TypeError, match="needs an EgtLMLLM"):
        EgtLMSynthesizer(llm="not a model")


def test_retrieved_nodes_are_spliced_and_reported(index, llm):
    response = engine(index, llm).query(QUESTION)
    report = response.metadata["egtlm"]
    assert report["reused_tokens"] > 0 and report["misses"] == 0
    assert report["exact_slots"] == 1 and report["approximate_slots"] == 1  # k = 2: the first is exact
    assert report["prefilled_tokens"] < report["prompt_tokens"]
    assert len(response.source_nodes) == 2 and all(
        n.node_id in response.metadata for n in response.source_nodes
    )


def test_first_slot_is_exact_so_k1_answers_as_a_full_prefill(index, llm, kwargs):
    reuse = engine(index, llm, k=1).query(QUESTION)
    full_llm = EgtLMLLM(**kwargs, max_new_tokens=8, context_window=2048, reuse_cache=False)
    full = engine(index, full_llm, k=1).query(QUESTION)
    assert reuse.metadata["egtlm"]["exact_slots"] == 1 and reuse.metadata["egtlm"]["approximate_slots"] == 0
    assert full.metadata["egtlm"]["reused_tokens"] == 0
    assert reuse.response == full.response  # float32: the same tokens, the same greedy answer


def test_states_are_captured_after_the_prompts_own_head(index, llm, monkeypatch):
    synth = EgtLMSynthesizer(llm)
    seen = []
    lm = llm.client
    real = lm.chat
    monkeypatch.setattr(lm, "chat", lambda messages, **kw: seen.append(messages) or real(messages, **kw))
    response = index.as_query_engine(llm=llm, similarity_top_k=1, response_synthesizer=synth).query(QUESTION)
    prompt = lm.document_cache.render_prompt(seen[0])
    head = synth.capture_prefix()
    assert prompt.startswith(head + response.source_nodes[0].node.get_content().strip())
    assert "Context information is below." in head and QUESTION not in head


def test_a_custom_template_moves_the_head(index, llm):
    from llama_index.core.base.llms.types import ChatMessage, MessageRole

    template = ChatPromptTemplate(
        [
            ChatMessage(role=MessageRole.SYSTEM, content="Answer briefly."),
            ChatMessage(role=MessageRole.USER, content="Docs:\n{context_str}\nQ: {query_str}"),
        ]
    )
    qe = engine(index, llm, k=1)
    qe.update_prompts({"response_synthesizer:text_qa_template": template})
    response = qe.query(QUESTION)
    assert qe._response_synthesizer.capture_prefix().endswith("Docs:\n")
    assert response.metadata["egtlm"]["exact_slots"] == 1 and response.metadata["egtlm"]["reused_tokens"] > 0


def test_states_stored_at_indexing_are_hits(index, llm):
    synth = EgtLMSynthesizer(llm, capture_states=False)
    nodes = index.as_retriever(similarity_top_k=3).retrieve(QUESTION)
    keys = synth.store_states(nodes)
    assert len(keys) == 3 and all(llm.client._rag.store.contains(k) for k in keys)
    qe = index.as_query_engine(llm=llm, similarity_top_k=2, response_synthesizer=synth)
    assert qe.query(QUESTION).metadata["egtlm"]["misses"] == 0


def test_without_the_synthesizer_nothing_is_spliced(tmp_path):
    """A plain query engine never hands its nodes out, so the model has nothing it may splice. Own
    weights: documents handed out on a loaded model are shared by every engine on it (other tests')."""
    own = build_tiny_model(tmp_path / "own", "llama")
    kwargs = {"model": str(own), "model_kwargs": {**FLOAT32, "cache_store": MemoryTier()}}
    index = chroma_index(tmp_path / "chroma", OTHER_DOCS, EgtLMEmbedding(**kwargs))
    llm = EgtLMLLM(**kwargs, max_new_tokens=8, context_window=2048)
    with collect_reports() as reports:
        index.as_query_engine(llm=llm, similarity_top_k=2).query(QUESTION)
    assert len(reports) == 1 and reports[0]["reused_tokens"] == 0


def test_aquery_and_streaming_equal_query(index, llm):
    expected = engine(index, llm).query(QUESTION)
    answer = asyncio.run(engine(index, llm).aquery(QUESTION))
    assert answer.response == expected.response and answer.metadata["egtlm"]["reused_tokens"] > 0

    streamed = engine(index, llm, streaming=True).query(QUESTION)
    assert "egtlm" not in streamed.metadata  # known when the stream has ended
    assert "".join(streamed.response_gen) == expected.response
    assert streamed.metadata["egtlm"]["reused_tokens"] > 0

    async def astream():
        response = await engine(index, llm, streaming=True).aquery(QUESTION)
        return "".join([t async for t in response.async_response_gen()]), response.metadata

    text, metadata = asyncio.run(astream())
    assert text == expected.response and metadata["egtlm"]["reused_tokens"] > 0


def test_concurrent_aqueries_equal_sequential_answers(index, llm):
    questions = [QUESTION, "Which animal jumps over the dog?", "Where did the cat sit?", "Who slept?"] * 8
    qe = engine(index, llm)
    expected = [qe.query(q).response for q in questions[:4]] * 8

    async def main():
        return await asyncio.gather(*(qe.aquery(q) for q in questions))

    responses = asyncio.run(main())
    assert [r.response for r in responses] == expected
    assert all(r.metadata["egtlm"]["reused_tokens"] > 0 for r in responses)  # each its own report


def test_default_llm_is_settings_llm_when_it_is_egtlm(llm, monkeypatch):
    from llama_index.core import Settings

    monkeypatch.setattr(Settings, "_llm", llm)
    assert EgtLMSynthesizer().llm is llm
