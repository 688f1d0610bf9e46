"""The default model in a standard LlamaIndex query engine over Chroma: an XQuAD question answered
from its paragraph with and without the shared cache, `aquery`, and 32 concurrent queries on one
shared model. k = 1 here: the one slot is exact, so reuse answers as a full prefill does (what k = 4
costs in answers is measured in benchmarks/llamaindex_rag.py and docs/guide_llamaindex.md)."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest
from li_support import chroma_index
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.llms import LLM
from llama_index.core.query_engine import RetrieverQueryEngine
from llama_index.core.response_synthesizers import CompactAndRefine
from llama_index.embeddings.egtlm import EgtLMEmbedding
from llama_index.llms.egtlm import EgtLMLLM
from llama_index.response_synthesizers.egtlm import EgtLMSynthesizer

from egtlm_core.loading.registry import loaded_models
from egtlm_core.loading.sources import resolve_source

pytestmark = pytest.mark.slow

DATA = Path(os.environ.get("EGTLM_DATA_DIR", Path(__file__).resolve().parents[4] / "shared" / "data"))
XQUAD = DATA / "xquad" / "xquad.en.json"
QUESTION, ANSWER = "What year did Tesla die? ", "1943"  # XQuAD, article "Nikola Tesla"


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    """The paragraph that answers QUESTION and the first paragraph of four other articles, on Chroma."""
    if not XQUAD.is_file():
        pytest.skip(f"XQuAD not found at {XQUAD}; set EGTLM_DATA_DIR to the shared data folder.")
    articles = json.loads(XQUAD.read_text(encoding="utf-8"))["data"]
    target = next(
        p["context"] for a in articles for p in a["paragraphs"] for q in p["qas"] if q["question"] == QUESTION
    )
    others = [
        a["paragraphs"][0]["context"]
        for a in articles
        if target not in [p["context"] for p in a["paragraphs"]]
    ]
    return chroma_index(tmp_path_factory.mktemp("chroma"), [target, *others[:4]], EgtLMEmbedding())


def engine(index, reuse: bool = True) -> RetrieverQueryEngine:
    llm = EgtLMLLM(max_new_tokens=24, reuse_cache=reuse)
    return index.as_query_engine(llm=llm, similarity_top_k=1, response_synthesizer=EgtLMSynthesizer(llm))


def test_classes_are_llamaindexs():
    assert issubclass(EgtLMEmbedding, BaseEmbedding) and EgtLMEmbedding.class_name() == "EgtLMEmbedding"
    assert issubclass(EgtLMLLM, LLM) and EgtLMLLM.class_name() == "EgtLMLLM"
    assert issubclass(EgtLMSynthesizer, CompactAndRefine)


def test_answers_xquad_from_its_paragraph_with_and_without_reuse(index):
    reused = engine(index).query(QUESTION)
    full = engine(index, reuse=False).query(QUESTION)
    assert "Tesla" in reused.source_nodes[0].node.get_content()
    assert ANSWER in reused.response and ANSWER in full.response
    report = reused.metadata["egtlm"]
    assert report["reused_tokens"] > 0 and report["exact_slots"] == 1 and report["misses"] == 0
    assert full.metadata["egtlm"]["reused_tokens"] == 0
    # Embedder and both LLMs: one copy of the weights. Other tests may still hold the default model
    # in another dtype (the LangChain suites load it in float32), so count this dtype's entries.
    dtype = EgtLMLLM(reuse_cache=False).client.dtype
    default = resolve_source(None)  # the shipped adapter over the packaged base
    assert len([m for m in loaded_models() if m.source == default and m.dtype == dtype]) == 1
    assert EgtLMEmbedding().client.model is EgtLMLLM(reuse_cache=False).client.model


def test_aquery_answers_as_query(index):
    qe = engine(index)
    answer = asyncio.run(qe.aquery(QUESTION))
    assert answer.response == qe.query(QUESTION).response and ANSWER in answer.response
    assert answer.metadata["egtlm"]["reused_tokens"] > 0


def test_32_concurrent_aqueries_equal_sequential_answers(index):
    questions = [QUESTION, "When was Tesla born?", "Who won Super Bowl 50?", "What is the Rhine?"] * 8
    qe = engine(index)
    expected = {q: qe.query(q).response for q in questions[:4]}

    async def main():
        return await asyncio.gather(*(qe.aquery(q) for q in questions))

    responses = asyncio.run(main())
    assert [r.response for r in responses] == [expected[q] for q in questions]
    assert all(r.metadata["egtlm"]["reused_tokens"] > 0 for r in responses)
