"""The server on Ray Serve with 2 replicas on a local 2-CPU cluster, states and documents in a real
Redis: the openai client gets the in-process vectors, and documents posted to one replica are
retrieved and their states spliced (cached tokens > 0) by the other."""

from __future__ import annotations

import uuid

import httpx
import numpy as np
import pytest

from egtlm_core import EgtLM
from egtlm_core.server import ServerSettings, free_port

ray = pytest.importorskip("ray")
pytest.importorskip("ray.serve")
pytest.importorskip("redis")
openai = pytest.importorskip("openai")

TEXTS = ["Paris is the capital of France.", "Berlin is the capital of Germany.", "Rome is in Italy."]


@pytest.fixture(scope="module")
def replicas(ray_cluster, redis_url, tiny_llama_dir):
    from ray import serve

    from egtlm_core.scale import serve_on_ray

    port = free_port()
    # a database of its own: the document stream is named after the model, which other tests also use
    url = redis_url.rsplit("/", 1)[0] + "/7"
    import redis

    redis.Redis.from_url(url).flushdb()
    settings = ServerSettings(
        model=str(tiny_llama_dir), model_kwargs={"torch_dtype": "float32"}, redis_url=url, served_name="tiny"
    )
    serve_on_ray(settings, 2, port=port, cpus_per_replica=1, blocking=False)  # returns once healthy
    base = f"http://127.0.0.1:{port}"
    assert httpx.get(f"{base}/health").status_code == 200
    yield base
    serve.shutdown()


def test_needs_redis_for_more_than_one_replica():
    from egtlm_core.scale import serve_on_ray

    with pytest.raises(ValueError, match="--redis"):
        serve_on_ray(ServerSettings(), 2)
    with pytest.raises(ValueError, match="positive integer"):
        serve_on_ray(ServerSettings(), 0)


def test_embeddings_equal_in_process_vectors(replicas, tiny_llama_dir):
    client = openai.OpenAI(base_url=f"{replicas}/v1", api_key="unused")
    got = client.embeddings.create(model="tiny", input=TEXTS)
    want = EgtLM(str(tiny_llama_dir), torch_dtype="float32").encode(TEXTS)
    np.testing.assert_allclose(np.array([d.embedding for d in got.data]), want, atol=1e-5)


def test_documents_posted_to_one_replica_are_reused_by_the_other(replicas):
    docs = [{"id": f"d{i}-{uuid.uuid4().hex[:6]}", "text": t} for i, t in enumerate(TEXTS)]
    posted = httpx.post(f"{replicas}/v1/documents", json={"documents": docs}, timeout=60)
    assert posted.status_code == 200, posted.text
    indexer = posted.headers["x-egtlm-process"]
    body = {"question": "What is the capital of France?", "k": 2, "max_tokens": 2}
    answered_by: dict[str, int] = {}
    for _ in range(30):  # the proxy picks a replica per request; both are hit within a few
        response = httpx.post(f"{replicas}/v1/answer", json=body, timeout=60)
        assert response.status_code == 200, response.text
        answered_by[response.headers["x-egtlm-process"]] = response.json()["usage"]["prompt_tokens_details"][
            "cached_tokens"
        ]
        if len(answered_by) == 2:
            break
    others = {who: cached for who, cached in answered_by.items() if who != indexer}
    assert others, f"every answer came from the indexing replica {indexer}"
    assert all(cached > 0 for cached in others.values()), others
