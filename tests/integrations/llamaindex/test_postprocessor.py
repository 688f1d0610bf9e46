"""`EgtLMRerank` (a LlamaIndex node postprocessor) on a tiny random model: it keeps the core
reranker's best nodes with its scores, shares the one model, and in a query engine with
`EgtLMSynthesizer` the kept nodes' states are still spliced (reused tokens > 0)."""

from __future__ import annotations

import pytest
from li_support import FLOAT32, chroma_index
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import NodeWithScore, TextNode
from llama_index.embeddings.egtlm import EgtLMEmbedding
from llama_index.llms.egtlm import EgtLMLLM
from llama_index.postprocessor.egtlm import EgtLMRerank
from llama_index.response_synthesizers.egtlm import EgtLMSynthesizer

from egtlm_core.cache import MemoryTier

# Texts the tiny tokenizer splits cleanly where the prompt joins them (see the LangChain reranker test).
DOCS = [
    "Paris is the capital of France. Berlin is the capital of Germany.",
    "Numbers like 12345 and words like don't, can't and it's.",
    "A cat sat on the mat while the dog slept by the fire.",
    "Retrieval augmented generation reads documents before answering questions.",
]
QUESTION = "What is the capital of France?"


@pytest.fixture(scope="module")
def kwargs(tiny_llama_dir) -> dict:
    return {"model": str(tiny_llama_dir), "model_kwargs": {**FLOAT32, "cache_store": MemoryTier()}}


def test_keeps_the_core_rerankers_best_nodes(kwargs):
    rerank = EgtLMRerank(**kwargs, top_n=2)
    assert isinstance(rerank, BaseNodePostprocessor)
    nodes = [NodeWithScore(node=TextNode(text=t, id_=f"n{i}"), score=0.0) for i, t in enumerate(DOCS)]
    out = rerank.postprocess_nodes(nodes, query_str=QUESTION)
    expected = rerank.client.rerank(QUESTION, DOCS, top_n=2)
    assert [n.node.node_id for n in out] == [f"n{r.index}" for r in expected]
    assert [n.score for n in out] == [r.score for r in expected]
    assert rerank.postprocess_nodes([], query_str=QUESTION) == []
    with pytest.raises(ValueError, match="needs the query"):
        rerank.postprocess_nodes(nodes)


def test_reranking_in_a_query_engine_keeps_cache_reuse(kwargs, tmp_path):
    llm = EgtLMLLM(**kwargs, max_new_tokens=8, context_window=2048)
    rerank = EgtLMRerank(**kwargs, top_n=2)
    assert rerank.client is llm.client  # one model, one shared cache
    index = chroma_index(tmp_path / "chroma", DOCS, EgtLMEmbedding(**kwargs))
    engine = index.as_query_engine(
        llm=llm, similarity_top_k=4, node_postprocessors=[rerank], response_synthesizer=EgtLMSynthesizer(llm)
    )
    response = engine.query(QUESTION)
    report = response.metadata["egtlm"]
    assert len(response.source_nodes) == 2
    assert [n.score for n in response.source_nodes] == [
        r.score for r in rerank.client.rerank(QUESTION, DOCS, top_n=2)
    ]
    assert report["reused_tokens"] > 0
    assert report["exact_slots"] + report["approximate_slots"] == 2  # both kept nodes spliced
