"""`EgtLMEmbeddingFunction` in Chroma: the contract methods, a persisted collection rebuilt in a new
process (PersistentClient and a real `chroma run` server), conflicts, and the model a config names.
Tiny random models unless marked slow."""

from __future__ import annotations

import json
import time

import chromadb
import numpy as np
import pytest
from chroma_session import DOCS, QUERIES
from chromadb.config import Settings
from chromadb.utils.embedding_functions import known_embedding_functions
from chromadb.utils.embedding_functions.onnx_mini_lm_l6_v2 import ONNXMiniLM_L6_V2
from chromadb_egtlm import EgtLMEmbeddingFunction
from conftest import run_session

from egtlm_core import EgtLM, EgtLMConfig

FLOAT32 = {"torch_dtype": "float32"}


@pytest.fixture
def ef(tiny_llama_dir) -> EgtLMEmbeddingFunction:
    return EgtLMEmbeddingFunction(str(tiny_llama_dir), model_kwargs=FLOAT32)


def persistent(path) -> chromadb.api.ClientAPI:
    return chromadb.PersistentClient(path=str(path), settings=Settings(anonymized_telemetry=False))


def test_registered_cheap_and_lazy(tiny_llama_dir):
    assert known_embedding_functions["egtlm"] is EgtLMEmbeddingFunction
    start = time.perf_counter()
    made = [EgtLMEmbeddingFunction(str(tiny_llama_dir), query_instruction="laziness") for _ in range(10)]
    assert time.perf_counter() - start < 0.5
    assert not any(f._lazy.loaded for f in made)
    assert EgtLMEmbeddingFunction.name() == "egtlm"
    assert made[0].default_space() == "cosine" and "cosine" in made[0].supported_spaces()


def test_documents_and_queries_embed_as_egtlm(ef, tiny_llama_dir):
    lm = EgtLM(str(tiny_llama_dir), torch_dtype="float32")
    texts = list(DOCS.values())
    assert np.abs(np.stack(ef(texts)) - lm.encode_documents(texts)).max() <= 1e-5
    assert np.abs(np.stack(ef.embed_query(QUERIES)) - lm.encode_queries(QUERIES)).max() <= 1e-5
    small = EgtLMEmbeddingFunction(str(tiny_llama_dir), model_kwargs=FLOAT32, dimensions=16)
    assert np.abs(np.stack(small(texts)) - lm.encode_documents(texts, dim=16)).max() <= 1e-5


def test_config_round_trip_is_json(tiny_llama_dir):
    ef = EgtLMEmbeddingFunction(
        str(tiny_llama_dir),
        model_kwargs=FLOAT32,
        pooling="mean",
        query_instruction="Find claims",
        batch_size=4,
    )
    config = json.loads(json.dumps(ef.get_config()))
    rebuilt = EgtLMEmbeddingFunction.build_from_config(config)
    assert rebuilt.get_config() == ef.get_config()
    assert config["model"] == str(tiny_llama_dir) and config["pooling"] == "mean"


def test_config_records_every_vector_field_and_round_trips_document_context(tiny_llama_dir):
    """The persisted settings are the core's one list; an explicit document_context="rag" validates,
    survives JSON and rebuilds a function whose documents embed after the RAG head."""
    config = EgtLMEmbeddingFunction(
        str(tiny_llama_dir), model_kwargs=FLOAT32, document_context="rag"
    ).get_config()
    EgtLMEmbeddingFunction.validate_config(config)
    stored = json.loads(json.dumps(config))
    assert stored["document_context"] == "rag"
    rebuilt = EgtLMEmbeddingFunction.build_from_config(stored)
    assert rebuilt.get_config() == config
    texts = list(DOCS.values())
    rag = EgtLM(str(tiny_llama_dir), torch_dtype="float32", document_context="rag")
    assert np.abs(np.stack(rebuilt(texts)) - rag.encode_documents(texts)).max() <= 1e-5
    # from an EgtLM instance every VECTOR_FIELDS setting is recorded, document_context included
    recorded = EgtLMEmbeddingFunction(rag).get_config()
    assert {k: recorded[k] for k in EgtLMConfig.VECTOR_FIELDS} == {
        k: getattr(rag.config, k) for k in EgtLMConfig.VECTOR_FIELDS
    }
    with pytest.raises(ValueError, match="document_context"):
        EgtLMEmbeddingFunction.validate_config({**config, "document_context": "prompt"})
    with pytest.raises(ValueError, match=r"Changing \['document_context'\]"):
        rebuilt.validate_config_update(config, {**config, "document_context": "instruction"})


def test_from_an_egtlm_instance_records_its_source_and_settings(tiny_llama_dir):
    lm = EgtLM(str(tiny_llama_dir), torch_dtype="float32", attention="bidirectional", pooling="mean")
    config = EgtLMEmbeddingFunction(lm).get_config()
    assert config["model"] == str(tiny_llama_dir.resolve()) and config["mode"] == "unified"
    embedding_only = EgtLM(str(tiny_llama_dir), mode="embedding", torch_dtype="float32")
    assert EgtLMEmbeddingFunction(embedding_only).get_config()["mode"] == "embedding"
    assert config["attention"] == "bidirectional" and config["pooling"] == "mean"
    rebuilt = EgtLMEmbeddingFunction.build_from_config({**config, "model_kwargs": FLOAT32})
    texts = list(DOCS.values())
    assert np.abs(np.stack(rebuilt(texts)) - lm.encode_documents(texts)).max() <= 1e-5


def test_bad_configs_name_the_problem(tiny_llama_dir):
    with pytest.raises(ValueError, match="Unknown pooling 'bogus'"):
        EgtLMEmbeddingFunction(pooling="bogus")
    with pytest.raises(ValueError, match="Unknown egtlm embedding config keys \\['colour'\\]"):
        EgtLMEmbeddingFunction.validate_config({"model": None, "colour": "red"})
    with pytest.raises(ValueError, match="not JSON values"):
        EgtLMEmbeddingFunction(model_kwargs={"torch_dtype": object()})
    with pytest.raises(ValueError, match="Unknown mode 'generative'"):
        EgtLMEmbeddingFunction(mode="generative")
    with pytest.raises(ValueError, match="dimensions must be a positive integer"):
        EgtLMEmbeddingFunction(dimensions=0)
    lm = EgtLM(str(tiny_llama_dir), torch_dtype="float32")
    with pytest.raises(ValueError, match="EgtLM instance"):
        EgtLMEmbeddingFunction(lm, pooling="mean")


def test_query_ranks_by_the_query_instruction(ef, tiny_llama_dir, tmp_path):
    """Chroma's nearest neighbours equal cosine ranking of encode_queries vs encode_documents."""
    collection = persistent(tmp_path).create_collection("docs", embedding_function=ef)
    assert collection.configuration_json["hnsw"]["space"] == "cosine"
    collection.add(ids=list(DOCS), documents=list(DOCS.values()))
    found = collection.query(query_texts=QUERIES, n_results=4)
    lm = EgtLM(str(tiny_llama_dir), torch_dtype="float32")
    scores = lm.encode_queries(QUERIES) @ lm.encode_documents(list(DOCS.values())).T
    expected = [[list(DOCS)[i] for i in np.argsort(-row)] for row in scores]
    assert found["ids"] == expected
    assert np.allclose(found["distances"], 1 - np.sort(scores, axis=1)[:, ::-1], atol=1e-5)


def test_reopened_collection_loads_the_model_once(tmp_path, monkeypatch):
    """Chroma rebuilds the function from the stored config on every call; the weights load once."""
    from tiny_models import build_tiny_model

    from egtlm_core.loading import registry

    model = str(build_tiny_model(tmp_path / "own_model", seed=3))
    loads = []
    real = registry.load_model_and_tokenizer
    monkeypatch.setattr(
        registry, "load_model_and_tokenizer", lambda *a, **k: loads.append(1) or real(*a, **k)
    )
    ef = EgtLMEmbeddingFunction(model, model_kwargs=FLOAT32)
    persistent(tmp_path / "db").create_collection("docs", embedding_function=ef).add(
        ids=list(DOCS), documents=list(DOCS.values())
    )
    del ef
    reopened = persistent(tmp_path / "db").get_collection("docs")
    for question in QUERIES * 2:
        assert len(reopened.query(query_texts=[question], n_results=2)["ids"][0]) == 2
    assert len(loads) == 1


def test_config_update_that_changes_vectors_is_refused(ef, tiny_llama_dir, tmp_path):
    collection = persistent(tmp_path).create_collection("docs", embedding_function=ef)
    other = EgtLMEmbeddingFunction(str(tiny_llama_dir), model_kwargs=FLOAT32, pooling="mean")
    with pytest.raises(ValueError, match=r"Changing \['pooling'\]"):
        collection.modify(configuration={"embedding_function": other})


def test_conflicting_embedding_function_gets_chromas_error(ef, tmp_path):
    persistent(tmp_path).create_collection("docs", embedding_function=ef)
    with pytest.raises(
        ValueError, match="Embedding function conflict: new: onnx_mini_lm_l6_v2 vs persisted: egtlm"
    ):
        persistent(tmp_path).get_collection("docs", embedding_function=ONNXMiniLM_L6_V2())


def check_reopened(written: dict, reopened: dict, model_dir: str) -> None:
    assert reopened["ids"] == written["ids"]
    assert np.allclose(reopened["distances"], written["distances"], atol=1e-6)
    assert reopened["embedding_function"] == written["embedding_function"]
    assert reopened["embedding_function"]["name"] == "egtlm"
    assert reopened["embedding_function"]["config"]["model"] == model_dir
    # The stored config named the tiny model: that is what the new process loaded, not the default.
    assert reopened["rebuilt"] == "EgtLMEmbeddingFunction" and reopened["rebuilt_source"] == model_dir
    assert reopened["loaded"] == [model_dir] and reopened["dimension"] == 64


def test_persistent_collection_rebuilt_in_a_new_process(tiny_llama_dir, tmp_path):
    model = str(tiny_llama_dir)
    written = run_session("write", "--path", str(tmp_path / "db"), "--name", "docs", "--model", model)
    reopened = run_session("query", "--path", str(tmp_path / "db"), "--name", "docs")
    check_reopened(written, reopened, model)


def test_chroma_server_collection_rebuilt_in_a_new_process(tiny_llama_dir, chroma_server):
    model = str(tiny_llama_dir)
    written = run_session("write", "--http", chroma_server, "--name", "docs", "--model", model)
    reopened = run_session("query", "--http", chroma_server, "--name", "docs")
    check_reopened(written, reopened, model)


@pytest.mark.slow
def test_default_model_collection_reopened_in_a_new_process(tmp_path):
    """The packaged default model: written in one process, rebuilt by name in another, same answers."""
    from egtlm_core.loading.sources import resolve_source

    written = run_session("write", "--path", str(tmp_path / "db"), "--name", "docs")
    reopened = run_session("query", "--path", str(tmp_path / "db"), "--name", "docs")
    assert reopened["ids"] == written["ids"]
    assert np.allclose(reopened["distances"], written["distances"], atol=1e-6)
    assert reopened["embedding_function"]["config"]["model"] is None  # portable: "the packaged default"
    # EgtLM()'s source: the shipped adapter over the packaged base (or the base where none is shipped)
    assert reopened["rebuilt_source"] == resolve_source(None).path and reopened["dimension"] == 576
    # "What is the capital of France?" finds the Paris text (the untrained model puts the cat text,
    # which mentions a dog, above the fox for "Which animal jumps over the dog?": not asserted).
    assert reopened["ids"][0][0] == "paris"
