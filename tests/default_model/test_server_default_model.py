"""`egtlm serve` over the real default model: a LangChain RAG chain answers an XQuAD question through
the OpenAI API and reports the documents' states reused; /v1/answer does the same."""

from __future__ import annotations

import json

import httpx
import pytest

from egtlm_core.server import BackgroundServer, ServerSettings

pytestmark = pytest.mark.slow
NAME = "SmolLM2-135M-Instruct"


@pytest.fixture(scope="module")
def xquad(shared_data):
    path = shared_data / "xquad" / "xquad.en.json"
    if not path.is_file():
        pytest.skip(f"XQuAD not found at {path}")
    data = json.loads(path.read_text())
    paragraphs = [article["paragraphs"][0] for article in data["data"][:4]]  # four topics
    return [p["context"] for p in paragraphs], paragraphs[0]["qas"][0]


@pytest.fixture(scope="module")
def server(default_lm):
    with BackgroundServer(ServerSettings(served_name=NAME), lm=default_lm) as running:
        yield running


def test_langchain_chain_over_the_server_answers_with_reuse(xquad, server):
    from langchain_core.prompts import ChatPromptTemplate
    from langchain_openai import ChatOpenAI

    contexts, qa = xquad
    body = {"documents": [{"id": f"xq{i}", "text": t} for i, t in enumerate(contexts)]}
    assert httpx.post(server.url + "/v1/documents", json=body, timeout=300).status_code == 200
    hits = httpx.post(server.url + "/v1/retrieve", json={"query": qa["question"], "k": 4}, timeout=60).json()
    assert sorted(h["id"] for h in hits["data"]) == ["xq0", "xq1", "xq2", "xq3"]
    gold = httpx.get(server.url + "/v1/documents/xq0").json()["text"]  # the base model's ranking varies
    prompt = ChatPromptTemplate.from_messages(
        [("system", "Answer from the context in a few words.\n\n{context}"), ("human", "{question}")]
    )
    llm = ChatOpenAI(model=NAME, base_url=server.url + "/v1", api_key="none", max_tokens=24, temperature=0)
    reply = (prompt | llm).invoke({"context": gold, "question": qa["question"]})
    assert reply.usage_metadata["input_token_details"]["cache_read"] > 100
    assert qa["answers"][0]["text"] in reply.content
    answer = httpx.post(
        server.url + "/v1/answer", json={"question": qa["question"], "k": 2, "max_tokens": 24}, timeout=120
    ).json()
    assert answer["usage"]["prompt_tokens_details"]["cached_tokens"] > 100
