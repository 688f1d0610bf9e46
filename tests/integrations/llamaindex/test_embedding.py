"""`EgtLMEmbedding`: the vectors `EgtLM` computes, batched, off the event loop, one model per process."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest
from li_support import FLOAT32
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.embeddings.egtlm import EgtLMEmbedding
from llama_index.embeddings.egtlm.base import DEFAULT_EMBED_BATCH_SIZE
from llama_index.llms.egtlm import EgtLMLLM

from egtlm_core import EgtLM

TEXTS = ["Paris is the capital of France.", "The quick brown fox.", "A cat sat on the mat."]


@pytest.fixture(scope="module")
def emb(tiny_llama_dir) -> EgtLMEmbedding:
    return EgtLMEmbedding(str(tiny_llama_dir), model_kwargs=FLOAT32)


def test_is_a_llamaindex_embedding_with_its_names(emb, tiny_llama_dir):
    assert isinstance(emb, BaseEmbedding)
    assert EgtLMEmbedding.class_name() == "EgtLMEmbedding" == emb.to_dict()["class_name"]
    assert emb.model_name == str(tiny_llama_dir)
    assert EgtLMEmbedding().model_name == "SmolLM2-135M-Instruct"  # lazy: nothing loads here
    assert emb.embed_batch_size == DEFAULT_EMBED_BATCH_SIZE > 10


def test_query_and_text_instructions_are_the_models(emb, tiny_llama_dir):
    lm = EgtLM(str(tiny_llama_dir), **FLOAT32)
    np.testing.assert_allclose(emb.get_query_embedding(TEXTS[0]), lm.encode_queries(TEXTS[0]), atol=1e-5)
    np.testing.assert_allclose(emb.get_text_embedding_batch(TEXTS), lm.encode_documents(TEXTS), atol=1e-5)
    assert not np.allclose(emb.get_query_embedding(TEXTS[0]), emb.get_text_embedding(TEXTS[0]))


def test_custom_instructions_change_the_vectors(emb, tiny_llama_dir):
    other = EgtLMEmbedding(
        str(tiny_llama_dir), model_kwargs=FLOAT32, query_instruction="Find a fox", text_instruction="Doc"
    )
    assert not np.allclose(other.get_query_embedding(TEXTS[0]), emb.get_query_embedding(TEXTS[0]))
    assert not np.allclose(other.get_text_embedding(TEXTS[0]), emb.get_text_embedding(TEXTS[0]))
    with pytest.raises(ValueError):
        EgtLMEmbedding(str(tiny_llama_dir), pooling="median")


def test_one_core_call_per_batch(emb, monkeypatch):
    calls = []
    lm = emb.client
    real = lm.encode_documents
    monkeypatch.setattr(
        lm, "encode_documents", lambda texts, **kw: calls.append(len(texts)) or real(texts, **kw)
    )
    vectors = emb.get_text_embedding_batch(TEXTS * 100, show_progress=True)
    assert len(vectors) == 300 and calls == [256, 44]
    np.testing.assert_allclose(vectors[0], emb.get_text_embedding(TEXTS[0]), atol=1e-5)


def test_matryoshka_dimensions(tiny_llama_dir):
    short = EgtLMEmbedding(str(tiny_llama_dir), model_kwargs=FLOAT32, dimensions=8)
    vectors = np.array(short.get_text_embedding_batch(TEXTS))
    assert vectors.shape == (3, 8)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_async_runs_off_the_event_loop(emb, monkeypatch):
    threads = []
    lm = emb.client
    for name in ("encode_queries", "encode_documents"):
        real = getattr(lm, name)
        monkeypatch.setattr(
            lm, name, lambda t, _r=real, **kw: threads.append(threading.current_thread()) or _r(t, **kw)
        )

    async def main():
        return await asyncio.gather(emb.aget_query_embedding("fox"), emb.aget_text_embedding_batch(TEXTS))

    query, docs = asyncio.run(main())
    assert threads and all(t is not threading.main_thread() for t in threads)
    np.testing.assert_allclose(query, emb.get_query_embedding("fox"), atol=1e-5)
    assert len(docs) == 3


def test_shares_the_model_with_the_llm(emb, tiny_llama_dir):
    llm = EgtLMLLM(model=str(tiny_llama_dir), model_kwargs=FLOAT32)
    assert llm.client is emb.client  # same settings: one EgtLM, one copy of the weights
