"""`EgtLMEmbeddings`: LangChain's standard suites plus what they do not check (laziness, sharing,
async off the event loop, concurrency, errors). Tiny random models unless marked slow."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest
from langchain_egtlm import ChatEgtLM, EgtLMEmbeddings
from langchain_tests.integration_tests import EmbeddingsIntegrationTests
from langchain_tests.unit_tests import EmbeddingsUnitTests

from egtlm_core import EgtLM
from egtlm_core.loading.registry import loaded_models
from egtlm_core.loading.sources import resolve_source

TEXTS = ["The quick brown fox jumps over the lazy dog.", "Paris is the capital of France.", "A cat sat."]
FLOAT32 = {"torch_dtype": "float32"}


class TestEgtLMEmbeddingsUnit(EmbeddingsUnitTests):
    @property
    def embeddings_class(self) -> type[EgtLMEmbeddings]:
        return EgtLMEmbeddings


@pytest.mark.slow
@pytest.mark.asyncio
@pytest.mark.filterwarnings("ignore:.*marked with '@pytest.mark.asyncio' but it is not an async function")
class TestEgtLMEmbeddingsIntegration(EmbeddingsIntegrationTests):
    """The standard suite on the packaged default model."""

    @property
    def embeddings_class(self) -> type[EgtLMEmbeddings]:
        return EgtLMEmbeddings


@pytest.fixture(scope="module")
def tiny(tiny_llama_dir) -> dict:
    return {"model": str(tiny_llama_dir), "model_kwargs": FLOAT32}


@pytest.fixture(scope="module")
def emb(tiny) -> EgtLMEmbeddings:
    return EgtLMEmbeddings(**tiny)


def test_construction_loads_nothing_and_is_cheap(tiny):
    start = time.perf_counter()
    models = [EgtLMEmbeddings(**tiny, pooling="mean", dimensions=8) for _ in range(10)]
    assert time.perf_counter() - start < 0.5
    assert not any(m._lazy.loaded for m in models)


def test_settings_are_checked_at_construction_without_loading():
    with pytest.raises(ValueError, match="Unknown pooling 'bogus'"):
        EgtLMEmbeddings(pooling="bogus")
    with pytest.raises(ValueError, match="greater than or equal to 1"):
        EgtLMEmbeddings(batch_size=0)
    with pytest.raises(ValueError, match="Extra inputs are not permitted"):
        EgtLMEmbeddings(modle="typo")


def test_vectors_are_the_cores_as_python_floats(emb, tiny):
    lm = EgtLM(tiny["model"], **FLOAT32)
    docs = emb.embed_documents(TEXTS)
    query = emb.embed_query("Where is Paris?")
    assert isinstance(docs, list) and all(isinstance(v, list) for v in docs)
    assert all(type(x) is float for v in docs for x in v) and type(query[0]) is float
    np.testing.assert_allclose(np.array(docs), lm.encode_documents(TEXTS), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(np.array(query), lm.encode_queries("Where is Paris?"), rtol=1e-6, atol=1e-6)


def test_settings_reach_the_model(tiny):
    emb = EgtLMEmbeddings(**tiny, dimensions=16, query_instruction="Find the city", pooling="mean")
    assert len(emb.embed_query("Paris")) == 16
    assert emb.client.config.pooling == "mean"
    assert emb.client.config.query_instruction == "Find the city"
    default = EgtLMEmbeddings(**tiny)
    assert not np.allclose(default.embed_query("Paris")[:16], emb.embed_query("Paris"))


def test_changed_fields_take_effect(emb):
    changed = emb.model_copy(update={"pooling": "mean"})
    assert changed.client is not emb.client and changed.client.config.pooling == "mean"
    assert emb.model_copy().client is emb.client


def test_empty_list_and_bad_inputs(emb):
    assert emb.embed_documents([]) == []
    with pytest.raises(ValueError, match="empty or whitespace"):
        emb.embed_documents(["fine", "  "])
    with pytest.raises(TypeError, match="must be a str"):
        emb.embed_documents(["fine", 3])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="list of strings"):
        emb.embed_documents("one string")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="takes a string"):
        emb.embed_query(["a list"])  # type: ignore[arg-type]


def test_an_egtlm_instance_can_be_injected(tiny):
    lm = EgtLM(tiny["model"], **FLOAT32)
    emb = EgtLMEmbeddings(model=lm)
    assert emb.client is lm
    with pytest.raises(ValueError, match="EgtLM instance"):
        EgtLMEmbeddings(model=lm, pooling="mean")


def test_same_settings_share_one_egtlm_and_chat_shares_its_weights(tiny):
    a, b = EgtLMEmbeddings(**tiny), EgtLMEmbeddings(**tiny)
    chat = ChatEgtLM(**tiny)
    assert a.client is b.client is chat.client  # one EgtLM: one RAG engine for retriever and chat
    other = EgtLMEmbeddings(**tiny, pooling="mean")
    assert other.client is not a.client and other.client.model is a.client.model  # same weights


def test_async_runs_off_the_event_loop(emb, monkeypatch):
    """A slow encode (0.3 s) must not stop a concurrent ticker on the loop."""
    client = emb.client
    original = client.encode_documents

    def slow(*args, **kwargs):
        time.sleep(0.3)
        return original(*args, **kwargs)

    monkeypatch.setattr(client, "encode_documents", slow)

    async def main() -> tuple[int, list]:
        ticks = 0
        done = asyncio.Event()

        async def ticker() -> None:
            nonlocal ticks
            while not done.is_set():
                await asyncio.sleep(0.01)
                ticks += 1

        task = asyncio.create_task(ticker())
        vectors = await emb.aembed_documents(TEXTS)
        done.set()
        await task
        return ticks, vectors

    ticks, vectors = asyncio.run(main())
    assert ticks >= 10 and len(vectors) == 3


def test_async_results_equal_sync(emb):
    async def main():
        return await asyncio.gather(emb.aembed_documents(TEXTS), emb.aembed_query("Where is Paris?"))

    docs, query = asyncio.run(main())
    np.testing.assert_allclose(docs, emb.embed_documents(TEXTS), atol=1e-6)
    np.testing.assert_allclose(query, emb.embed_query("Where is Paris?"), atol=1e-6)


def test_concurrent_calls_from_threads_agree(emb):
    expected = emb.embed_documents(TEXTS)
    results: list = [None] * 6
    errors: list = []

    def work(i: int) -> None:
        try:
            results[i] = emb.embed_documents(TEXTS)
        except Exception as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for got in results:
        np.testing.assert_allclose(got, expected, atol=1e-6)


@pytest.mark.slow
def test_default_embedder_and_chat_load_the_causal_lm_once():
    emb, chat = EgtLMEmbeddings(), ChatEgtLM()
    assert emb.client is chat.client
    assert emb.client.model is chat.client.model
    source = resolve_source(None)  # the shipped adapter over the packaged base
    default = [m for m in loaded_models() if m.source == source and m.dtype == emb.client.dtype]
    assert len(default) == 1 and default[0].has_lm_head
    assert len(emb.embed_query("hello")) == 576


def test_public_api_is_pinned():
    import langchain_egtlm

    assert langchain_egtlm.__all__ == ["ChatEgtLM", "EgtLMCacheRetriever", "EgtLMEmbeddings", "EgtLMReranker"]
    for name in langchain_egtlm.__all__:
        assert getattr(langchain_egtlm, name).__module__.startswith("langchain_egtlm.")
