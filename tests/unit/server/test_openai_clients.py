"""The official openai client and the frameworks' OpenAI clients against a real server."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import textwrap

import httpx
import numpy as np
import openai
import pytest
from server_fixtures import MODEL

DOCS = [
    "Paris is the capital of France and its largest city.",
    "Berlin is the capital of Germany; it lies on the Spree.",
    "The quick brown fox jumps over the lazy dog.",
]


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)


def test_embeddings_float_and_base64_equal_in_process(client, tiny_lm):
    expected = tiny_lm.encode(DOCS)  # what a user types first: the server returns the same vector
    np.testing.assert_array_equal(expected, tiny_lm.encode_documents(DOCS))
    floats = client.embeddings.create(model=MODEL, input=DOCS, encoding_format="float")
    got = np.array([d.embedding for d in floats.data], dtype=np.float32)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert floats.usage.prompt_tokens > 0 and floats.model == MODEL
    default = client.embeddings.create(model=MODEL, input=DOCS)  # the SDK asks for base64 by default
    np.testing.assert_allclose(np.array([d.embedding for d in default.data]), expected, atol=1e-5)
    raw = httpx.post(
        str(client.base_url) + "embeddings",
        json={"model": MODEL, "input": DOCS[0], "encoding_format": "base64", "input_type": "query"},
    ).json()
    vector = np.frombuffer(base64.b64decode(raw["data"][0]["embedding"]), dtype="<f4")
    np.testing.assert_allclose(vector, tiny_lm.encode_queries(DOCS[0]), atol=1e-5)


def test_embeddings_dimensions(client, tiny_lm):
    out = client.embeddings.create(model=MODEL, input=DOCS[:2], dimensions=16, encoding_format="float")
    got = np.array([d.embedding for d in out.data])
    np.testing.assert_allclose(got, tiny_lm.encode_documents(DOCS[:2], dim=16), atol=1e-5)
    assert np.allclose(np.linalg.norm(got, axis=1), 1, atol=1e-5)


def test_concurrent_embeddings_are_micro_batched(server, tiny_lm):
    import concurrent.futures

    texts = [f"text number {i} about a fox" for i in range(24)]
    expected = tiny_lm.encode_documents(texts)

    def one(i):
        body = {"model": MODEL, "input": texts[i]}
        return httpx.post(server.url + "/v1/embeddings", json=body, timeout=60).json()["data"][0]["embedding"]

    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        got = np.array(list(pool.map(one, range(len(texts)))), dtype=np.float32)
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_chat_and_stream_with_usage(client):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a fox."}]
    out = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=6)
    assert out.choices[0].finish_reason in ("stop", "length")
    assert out.usage.completion_tokens <= 6 and out.usage.prompt_tokens > 0
    assert out.usage.prompt_tokens_details.cached_tokens == 0
    chunks = list(
        client.chat.completions.create(
            model=MODEL,
            messages=messages,
            max_completion_tokens=6,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == out.choices[0].message.content  # greedy: the same answer streamed
    assert chunks[-1].usage.completion_tokens == out.usage.completion_tokens and not chunks[-1].choices
    assert chunks[-2].choices[0].finish_reason == out.choices[0].finish_reason


TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 12}},
            "required": ["city"],
        },
    },
}


@pytest.mark.parametrize("stream", [False, True])
def test_forced_tool_call_parses(client, stream):
    kwargs = dict(
        model=MODEL,
        messages=[{"role": "user", "content": "Weather in Paris?"}],
        tools=[TOOL],
        tool_choice="required",
        max_tokens=48,
    )
    if not stream:
        out = client.chat.completions.create(**kwargs)
        assert out.choices[0].finish_reason == "tool_calls"
        (call,) = out.choices[0].message.tool_calls
    else:
        chunks = list(client.chat.completions.create(stream=True, **kwargs))
        deltas = [d for c in chunks for d in (c.choices[0].delta.tool_calls or [])]
        (call,) = deltas
        assert chunks[-1].choices[0].finish_reason == "tool_calls"
    assert call.function.name == "get_weather"
    assert isinstance(json.loads(call.function.arguments)["city"], str)


def test_tool_result_in_history_is_accepted(client):
    messages = [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    ]
    out = client.chat.completions.create(model=MODEL, messages=messages, tools=[TOOL], max_tokens=4)
    assert out.usage.prompt_tokens > 0


def test_json_schema_response_format(client):
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string", "maxLength": 10}, "age": {"type": "integer"}},
        "required": ["name", "age"],
    }
    out = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "A person as JSON"}],
        max_tokens=40,
        response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": schema}},
    )
    data = json.loads(out.choices[0].message.content)
    assert set(data) == {"name", "age"} and isinstance(data["age"], int)
    anything = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "JSON please"}],
        max_tokens=30,
        response_format={"type": "json_object"},
    )
    assert isinstance(json.loads(anything.choices[0].message.content), dict)


def _index(url: str, ids: list[str], texts: list[str]) -> None:
    body = {"documents": [{"id": i, "text": t} for i, t in zip(ids, texts, strict=True)]}
    assert httpx.post(url + "/v1/documents", json=body, timeout=60).status_code == 200


def test_langchain_rag_chain_reports_cached_tokens(server, tiny_lm):
    from langchain_core.prompts import ChatPromptTemplate
    from langchain_core.vectorstores import InMemoryVectorStore
    from langchain_openai import ChatOpenAI, OpenAIEmbeddings

    _index(server.url, ["paris", "berlin", "fox"], DOCS)
    embeddings = OpenAIEmbeddings(
        model=MODEL, base_url=server.url + "/v1", api_key="unused", check_embedding_ctx_length=False
    )
    np.testing.assert_allclose(
        embeddings.embed_documents(DOCS[:1])[0], tiny_lm.encode_documents(DOCS[0]), atol=1e-5
    )
    store = InMemoryVectorStore.from_texts(DOCS, embeddings)
    retriever = store.as_retriever(search_kwargs={"k": 2})
    prompt = ChatPromptTemplate.from_messages(
        [("system", "Answer from the context.\n\n{context}"), ("human", "{question}")]
    )
    llm = ChatOpenAI(model=MODEL, base_url=server.url + "/v1", api_key="unused", max_tokens=8, temperature=0)

    def context(question: str) -> str:
        return "\n\n".join(d.page_content for d in retriever.invoke(question))

    question = "What is the capital of France?"
    message = (prompt | llm).invoke({"context": context(question), "question": question})
    assert message.usage_metadata["input_token_details"]["cache_read"] > 0
    chunks = list((prompt | llm).stream({"context": context(question), "question": question}))
    assert "".join(c.content for c in chunks) == message.content


def test_two_processes_share_documents(server):
    """An indexing script in another process; a LangChain app here reuses its documents' states."""
    from langchain_openai import ChatOpenAI

    texts = ["Lyon lies where the Rhone meets the Saone.", "Marseille is a port on the Mediterranean."]
    script = textwrap.dedent(
        f"""
        import httpx
        docs = [{{"id": "lyon", "text": {texts[0]!r}}}, {{"id": "marseille", "text": {texts[1]!r}}}]
        body = {{"documents": docs}}
        r = httpx.post({server.url!r} + "/v1/documents", json=body, timeout=60)
        r.raise_for_status()
        print(r.json()["data"][0]["id"])
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "lyon"
    llm = ChatOpenAI(model=MODEL, base_url=server.url + "/v1", api_key="unused", max_tokens=4)
    message = llm.invoke([("system", f"Context:\n{texts[0]}"), ("human", "Where is Lyon?")])
    assert message.usage_metadata["input_token_details"]["cache_read"] > 0


def test_llamaindex_openai_like(server, tiny_lm):
    from llama_index.core.llms import ChatMessage
    from llama_index.embeddings.openai_like import OpenAILikeEmbedding
    from llama_index.llms.openai_like import OpenAILike

    embed = OpenAILikeEmbedding(model_name=MODEL, api_base=server.url + "/v1", api_key="unused")
    np.testing.assert_allclose(
        embed.get_text_embedding(DOCS[0]), tiny_lm.encode_documents(DOCS[0]), atol=1e-5
    )
    llm = OpenAILike(
        model=MODEL,
        api_base=server.url + "/v1",
        api_key="unused",
        is_chat_model=True,
        max_tokens=5,
        context_window=512,
    )
    reply = llm.chat([ChatMessage(role="user", content="Hello")])
    assert reply.raw.usage.completion_tokens <= 5


def test_chroma_openai_embedding_function(server, tiny_lm):
    from chromadb.utils.embedding_functions import OpenAIEmbeddingFunction

    fn = OpenAIEmbeddingFunction(api_key="unused", model_name=MODEL, api_base=server.url + "/v1")
    np.testing.assert_allclose(np.array(fn(DOCS)), tiny_lm.encode_documents(DOCS), atol=1e-5)


def test_retrieve_and_answer_with_reuse(server):
    _index(server.url, ["paris", "berlin", "fox"], DOCS)
    hits = httpx.post(server.url + "/v1/retrieve", json={"query": "Capital of France?", "k": 2}).json()[
        "data"
    ]
    assert len(hits) == 2 and hits[0]["score"] >= hits[1]["score"]
    out = httpx.post(
        server.url + "/v1/answer", json={"question": "Capital of France?", "k": 2, "max_tokens": 5}
    ).json()
    assert out["usage"]["prompt_tokens_details"]["cached_tokens"] > 0
    assert [d["id"] for d in out["documents"]] == [h["id"] for h in hits]
    events = []
    with httpx.stream(
        "POST",
        server.url + "/v1/answer",
        json={"question": "Capital of France?", "k": 2, "max_tokens": 5, "stream": True},
    ) as r:
        for line in r.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                events.append(json.loads(line[6:]))
    assert events[0]["type"] == "documents" and events[-1]["type"] == "done"
    assert "".join(e["text"] for e in events if e["type"] == "delta") == out["answer"]


def test_documents_get_list_delete(server):
    _index(server.url, ["tmp-doc"], ["A temporary document about owls."])
    assert httpx.get(server.url + "/v1/documents/tmp-doc").json()["text"].startswith("A temporary")
    assert "tmp-doc" in [d["id"] for d in httpx.get(server.url + "/v1/documents?limit=1000").json()["data"]]
    assert httpx.delete(server.url + "/v1/documents/tmp-doc").json()["deleted"] is True
    missing = httpx.get(server.url + "/v1/documents/tmp-doc")
    assert missing.status_code == 404 and "tmp-doc" in missing.json()["error"]["message"]
