"""A Chroma collection filled on Ray Data (2 actors on a local 2-CPU cluster, states to a real
Redis): on a `chroma run` server, the stored vectors are the collection's own function's, queries
find the documents, the states are in Redis, and a second run adds nothing."""

from __future__ import annotations

import uuid

import numpy as np
import pytest
from chromadb_egtlm import EgtLMEmbeddingFunction, index_collection_on_ray

ray = pytest.importorskip("ray")
chromadb = pytest.importorskip("chromadb")
pytest.importorskip("redis")

WORDS = "capital river mountain city harbour museum bridge forest island valley".split()
DOCS = [
    {"id": f"p{i}", "text": f"Passage {i}: the {WORDS[i % 10]} near the {WORDS[(i * 3) % 10]}.",
     "metadata": {"n": i} if i % 2 else {}}
    for i in range(24)
]  # fmt: skip


def test_a_server_collection_filled_on_ray(ray_cluster, chroma_server, redis_url, tiny_llama_dir):
    host, port = chroma_server.split(":")
    client = chromadb.HttpClient(host=host, port=int(port))
    function = EgtLMEmbeddingFunction(
        str(tiny_llama_dir), model_kwargs={"torch_dtype": "float32"}, dimensions=32
    )
    collection = client.create_collection(f"ray-{uuid.uuid4().hex[:8]}", embedding_function=function)
    collection.add(ids=["p0"], documents=[DOCS[0]["text"]])  # already there: skipped
    assert index_collection_on_ray(collection, DOCS, redis_url=redis_url, actors=2, batch_size=8) == 23
    stored = collection.get(ids=[d["id"] for d in DOCS], include=["embeddings", "documents", "metadatas"])
    by_id = dict(zip(stored["ids"], stored["embeddings"], strict=True))
    want = function([d["text"] for d in DOCS])  # what the collection embeds itself (32 dimensions)
    got = np.array([by_id[d["id"]] for d in DOCS])
    np.testing.assert_allclose(got, np.array(want), atol=1e-5)
    assert dict(zip(stored["ids"], stored["metadatas"], strict=True))["p3"] == {"n": 3}
    assert collection.query(query_embeddings=[want[5]], n_results=1)["ids"][0] == ["p5"]
    assert (
        len(collection.query(query_texts=["a river"], n_results=3)["ids"][0]) == 3
    )  # the function's queries
    assert index_collection_on_ray(collection, DOCS, redis_url=redis_url, actors=2) == 0  # resumed: all there


def test_a_collection_of_another_function_is_refused(tmp_path):
    client = chromadb.PersistentClient(path=str(tmp_path / "db"))
    other = client.create_collection("other", embedding_function=None)  # vectors given by the caller
    with pytest.raises(ValueError, match="not an EgtLMEmbeddingFunction"):
        index_collection_on_ray(other, DOCS)
