"""Bad requests get a 4xx in OpenAI's error shape with a message, never a 500; the server keeps
serving. Plus the key, the metrics, size limits, a client that disconnects, and a schema fuzz run."""

from __future__ import annotations

import time

import httpx
import pytest
from server_fixtures import F32, MODEL

from egtlm_core.generation.limit import generation_limit
from egtlm_core.server import BackgroundServer, ServerSettings

CHAT = "/v1/chat/completions"
EMB = "/v1/embeddings"
USER = [{"role": "user", "content": "hi"}]

BAD = [
    (EMB, {"model": MODEL, "input": ""}),
    (EMB, {"model": MODEL, "input": []}),
    (EMB, {"model": MODEL, "input": "x" * 100_000}),
    (EMB, {"model": MODEL, "input": [[1, 2, 3]]}),
    (EMB, {"model": MODEL, "input": [1, 2, 3]}),
    (EMB, {"model": MODEL, "input": 5}),
    (EMB, {"model": MODEL, "input": ["a", None]}),
    (EMB, {"model": "gpt-4o", "input": "a"}),
    (EMB, {"model": MODEL, "input": "a", "dimensions": 100_000}),
    (EMB, {"model": MODEL, "input": "a", "encoding_format": "int8"}),
    (EMB, {"input": "a"}),
    (EMB, {"model": MODEL, "input": "a", "surprise": 1}),
    (CHAT, {"model": MODEL, "messages": []}),
    (CHAT, {"model": MODEL, "messages": "hi"}),
    (CHAT, {"model": MODEL, "messages": [{"role": "wizard", "content": "hi"}]}),
    (CHAT, {"model": MODEL, "messages": [{"role": "user"}]}),
    (CHAT, {"model": MODEL, "messages": USER, "max_tokens": 0}),
    (CHAT, {"model": MODEL, "messages": USER, "max_tokens": 10**9}),
    (CHAT, {"model": MODEL, "messages": USER, "max_completion_tokens": -1}),
    (CHAT, {"model": MODEL, "messages": USER, "temperature": "hot"}),
    (CHAT, {"model": MODEL, "messages": USER, "top_p": 0}),
    (CHAT, {"model": MODEL, "messages": USER, "n": 2}),
    (CHAT, {"model": MODEL, "messages": USER, "logprobs": True}),
    (CHAT, {"model": MODEL, "messages": USER, "stop": ["a", "b", "c", "d", "e"]}),
    (CHAT, {"model": MODEL, "messages": USER, "tool_choice": "required"}),
    (CHAT, {"model": MODEL, "messages": [{"role": "user", "content": "hi " * 2000}]}),
    (CHAT, {"model": "nope", "messages": USER}),
    (
        CHAT,
        {
            "model": MODEL,
            "messages": USER,
            "max_tokens": 2,
            "response_format": {
                "type": "json_schema",
                "json_schema": {
                    "name": "x",
                    "schema": {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]},
                },
            },
        },
    ),
    ("/v1/documents", {"documents": []}),
    ("/v1/documents", {"documents": [{"text": ""}]}),
    ("/v1/documents", {"documents": [{"id": "a", "text": "x"}, {"id": "a", "text": "y"}]}),
    ("/v1/retrieve", {"query": "q", "k": 0}),
    ("/v1/answer", {"question": "", "k": 2}),
]


@pytest.mark.parametrize(("path", "body"), BAD, ids=[f"{p}:{str(b)[:60]}" for p, b in BAD])
def test_bad_request_is_a_4xx_with_a_message(server, path, body):
    response = httpx.post(server.url + path, json=body, timeout=60)
    assert 400 <= response.status_code < 500, response.text
    error = response.json()["error"]
    assert error["message"] and error["type"]


def test_invalid_json_and_server_keeps_serving(server):
    bad = httpx.post(server.url + EMB, content=b'{"model": ', headers={"content-type": "application/json"})
    assert bad.status_code == 400 and "JSON" in bad.json()["error"]["message"]
    not_object = httpx.post(server.url + EMB, content=b"[1]", headers={"content-type": "application/json"})
    assert not_object.status_code == 400
    assert httpx.get(server.url + "/health").json()["status"] == "ok"
    ok = httpx.post(server.url + EMB, json={"model": MODEL, "input": "still here"})
    assert ok.status_code == 200


def test_unknown_route_and_method(server):
    assert httpx.get(server.url + "/v1/nothing").json()["error"]["message"]
    assert httpx.get(server.url + EMB).status_code == 405


@pytest.fixture(scope="module")
def guarded(tiny_llama_dir, tiny_lm):
    settings = ServerSettings(
        model=str(tiny_llama_dir),
        model_kwargs=F32,
        served_name=MODEL,
        api_key="s3cret",
        metrics=True,
        max_request_bytes=2000,
    )
    with BackgroundServer(settings) as running:
        yield running


def test_api_key_and_open_health(guarded):
    assert httpx.get(guarded.url + "/health").status_code == 200
    denied = httpx.get(guarded.url + "/v1/models")
    assert denied.status_code == 401 and denied.json()["error"]["code"] == "invalid_api_key"
    assert httpx.get(guarded.url + "/v1/models", headers={"Authorization": "Bearer wrong"}).status_code == 401
    ok = httpx.get(guarded.url + "/v1/models", headers={"Authorization": "Bearer s3cret"})
    assert ok.json()["data"][0]["id"] == MODEL


def test_body_over_the_limit_is_413(guarded):
    big = {"model": MODEL, "input": "x" * 5000}
    response = httpx.post(guarded.url + EMB, json=big, headers={"Authorization": "Bearer s3cret"})
    assert response.status_code == 413 and "limit" in response.json()["error"]["message"]


def test_metrics(guarded):
    auth = {"Authorization": "Bearer s3cret"}
    httpx.post(guarded.url + EMB, json={"model": MODEL, "input": ["a", "b"]}, headers=auth)
    httpx.post(guarded.url + CHAT, json={"model": MODEL, "messages": USER, "max_tokens": 3}, headers=auth)
    text = httpx.get(guarded.url + "/metrics", headers=auth).text
    for name in (
        "egtlm_requests_total",
        "egtlm_tokens_total",
        "egtlm_queue_seconds",
        "egtlm_ttft_seconds",
        "egtlm_embedding_batch_texts",
        "egtlm_kv_store_bytes",
    ):
        assert name in text
    assert 'route="/v1/embeddings",status="200"' in text


def test_metrics_off_by_default(server):
    assert httpx.get(server.url + "/metrics").status_code == 404


def test_health_is_503_while_loading(tiny_llama_dir):
    from fastapi.testclient import TestClient

    from egtlm_core.server import create_app

    app = create_app(ServerSettings(model=str(tiny_llama_dir), model_kwargs=F32, served_name=MODEL))
    app.state.egtlm.ready.clear()
    with TestClient(app) as client:
        app.state.egtlm.ready.clear()  # hold it in the loading state
        assert client.get("/health").status_code == 503
        loading = client.post(EMB, json={"model": MODEL, "input": "a"})
        assert loading.status_code == 503 and "loading" in loading.json()["error"]["message"]


def test_disconnect_stops_the_generation(server):
    limit = generation_limit("cpu")
    body = {"model": MODEL, "messages": USER, "max_tokens": 400, "stream": True}
    with httpx.stream("POST", server.url + CHAT, json=body, timeout=60) as response:
        for line in response.iter_lines():
            if '"content"' in line and '"content":""' not in line:
                break  # one token arrived: hang up
    deadline = time.monotonic() + 2
    while limit.active and time.monotonic() < deadline:
        time.sleep(0.01)
    assert limit.active == 0
    assert httpx.get(server.url + "/health").status_code == 200


def _fuzz(operation, base_url: str, failures: list[str]) -> None:
    from hypothesis import HealthCheck, given, settings
    from schemathesis.checks import not_a_server_error

    @settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(operation.as_strategy())
    def check(case):
        response = case.call(base_url=base_url, timeout=60)
        try:
            case.validate_response(response, checks=[not_a_server_error])
        except Exception as err:  # collected, so every operation is tried
            failures.append(f"{operation.method.upper()} {operation.path}: {err}")

    check()


def test_schema_fuzz_finds_no_server_error(server):
    """schemathesis over the server's own OpenAPI document, a few examples per operation."""
    import schemathesis

    schema = schemathesis.openapi.from_url(server.url + "/openapi.json")
    failures: list[str] = []
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10
    for operation in operations:
        _fuzz(operation, server.url, failures)
    assert not failures, failures[:3]
    assert httpx.get(server.url + "/health").status_code == 200


def test_a_temperature_near_zero_decodes_greedily(server):
    """scores / 1e-300 overflow; the core treats such a temperature as greedy (found by the fuzz run)."""
    body = {"model": MODEL, "messages": USER, "max_tokens": 4}
    greedy = httpx.post(server.url + CHAT, json={**body, "temperature": 0}).json()
    tiny = httpx.post(server.url + CHAT, json={**body, "temperature": 1e-300})
    assert tiny.status_code == 200
    assert tiny.json()["choices"][0]["message"]["content"] == greedy["choices"][0]["message"]["content"]


def test_every_response_names_the_process_that_answered(server, guarded):
    """Behind a proxy (Ray Serve, a load balancer) this is how a client sees which replica served it."""
    import os
    import socket

    me = f"{socket.gethostname()}:{os.getpid()}"  # BackgroundServer runs in this process
    assert httpx.get(server.url + "/health").headers["x-egtlm-process"] == me
    assert httpx.get(guarded.url + "/v1/models").headers["x-egtlm-process"] == me  # a 401 too


@pytest.mark.parametrize("url", ["localhost:6379", "http://127.0.0.1:6379", ""])
def test_a_redis_url_is_checked_when_the_settings_are_built(url):
    with pytest.raises(ValueError, match="redis://host:6379/0"):
        ServerSettings(redis_url=url)
