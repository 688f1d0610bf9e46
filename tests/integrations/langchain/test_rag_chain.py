"""A standard LCEL RAG chain over Chroma answers an XQuAD question, with and without cache reuse.

The chain is the one from LangChain's RAG tutorial; only the classes are ours:

    {"context": retriever | format_docs, "question": RunnablePassthrough()} | prompt | llm

Chroma runs in-process (`PersistentClient` in a temp dir) and as a real server (`chroma run`,
`HttpClient`). What is exact: the retriever is given the chain's prompt, so documents are captured
after the prompt's own text before `{context}`; the first (here: only) document's states are then
the states a prefill of the same tokens computes (no approximate hit), and in float32 the answer
equals the no-reuse answer token for token. In bf16 the split prefill can round differently from one
long prefill, which flips a greedy token now and then (measured in docs/guide_langchain.md).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from langchain_core.documents import Document
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnablePassthrough

pytestmark = pytest.mark.slow

XQUAD = Path(os.environ.get("EGTLM_DATA_DIR", Path(__file__).resolve().parents[4] / "shared" / "data"))
XQUAD = XQUAD / "xquad" / "xquad.en.json"
QUESTION, ANSWER = "What year did Tesla die? ", "1943"  # XQuAD, article "Nikola Tesla"
FLOAT32 = {"torch_dtype": "float32"}  # exact comparison; see the module docstring
PROMPT = ChatPromptTemplate.from_messages(
    [
        ("system", "Answer the question using only the context. Be brief."),
        ("human", "Context:\n{context}\n\nQuestion: {question}"),
    ]
)


def format_docs(docs: list[Document]) -> str:
    return "\n\n".join(doc.page_content for doc in docs)


@pytest.fixture(scope="module")
def paragraphs() -> list[str]:
    """The paragraph that answers QUESTION and one paragraph from each of 4 other articles."""
    if not XQUAD.is_file():
        pytest.skip(f"XQuAD not found at {XQUAD}; set EGTLM_DATA_DIR to the shared data folder.")
    articles = json.loads(XQUAD.read_text(encoding="utf-8"))["data"]
    contexts = [[p["context"] for p in a["paragraphs"]] for a in articles]
    qas = {q["question"]: p["context"] for a in articles for p in a["paragraphs"] for q in p["qas"]}
    target = qas[QUESTION]
    others = [c[0] for c in contexts[:12] if target not in c]
    return [target, *others[:4]]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def chroma_server(tmp_path_factory) -> Any:
    """A real Chroma server (`chroma run`) on a free local port; terminated after the session."""
    import chromadb

    exe = Path(sys.executable).with_name("chroma")
    command = str(exe) if exe.is_file() else shutil.which("chroma")
    if command is None:
        pytest.skip("the `chroma` command (chromadb) is not installed")
    port = _free_port()
    log = tmp_path_factory.mktemp("chroma") / "server.log"
    path = tmp_path_factory.mktemp("chroma-data")
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [command, "run", "--path", str(path), "--host", "127.0.0.1", "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                client = chromadb.HttpClient(host="127.0.0.1", port=port)
                client.heartbeat()
                break
            except Exception:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"chroma run did not come up: {log.read_text()[-2000:]}") from None
                time.sleep(0.2)
        yield client
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module", params=["persistent", "server"])
def chroma_store(request, tmp_path_factory, paragraphs) -> Any:
    """A Chroma collection of the paragraphs (embedded with EgtLMEmbeddings), in-process or served;
    the retriever that filled it stored the paragraphs' states after PROMPT's head."""
    import chromadb
    from langchain_chroma import Chroma
    from langchain_egtlm import EgtLMCacheRetriever, EgtLMEmbeddings

    if request.param == "server":
        client = request.getfixturevalue("chroma_server")
    else:
        client = chromadb.PersistentClient(path=str(tmp_path_factory.mktemp("chroma-local")))
    embeddings = EgtLMEmbeddings(model_kwargs=FLOAT32)
    store = Chroma(f"xquad-{uuid.uuid4().hex[:8]}", embedding_function=embeddings, client=client)
    EgtLMCacheRetriever(vectorstore=store, prompt=PROMPT, model_kwargs=FLOAT32).add_texts(paragraphs)
    return store


def _retriever(store: Any, k: int) -> Any:
    from langchain_egtlm import EgtLMCacheRetriever

    return EgtLMCacheRetriever(vectorstore=store, k=k, prompt=PROMPT, model_kwargs=FLOAT32)


def _chain(retriever: Any, reuse_cache: bool, prompt: ChatPromptTemplate = PROMPT) -> Any:
    """The tutorial's RAG chain, ending in the AIMessage (its `.content` is what StrOutputParser gives)."""
    from langchain_egtlm import ChatEgtLM

    llm = ChatEgtLM(max_tokens=16, temperature=0, reuse_cache=reuse_cache, model_kwargs=FLOAT32)
    return {"context": retriever | format_docs, "question": RunnablePassthrough()} | prompt | llm


def test_single_document_answer_is_the_same_with_and_without_reuse(chroma_store, paragraphs):
    retriever = _retriever(chroma_store, k=1)
    assert retriever.invoke(QUESTION)[0].page_content == paragraphs[0]

    reused = _chain(retriever, reuse_cache=True).invoke(QUESTION)
    full = _chain(retriever, reuse_cache=False).invoke(QUESTION)

    stats = reused.response_metadata["egtlm"]
    assert stats["reused_tokens"] > 0 and stats["prefilled_tokens"] < full.usage_metadata["input_tokens"]
    assert stats["hits"] == 2 and stats["misses"] == 0  # the prompt head and the document
    assert stats["approximate_hits"] == 0  # captured after this chain's own prefix: exact
    assert (stats["exact_slots"], stats["approximate_slots"], stats["recomputed_tokens"]) == (1, 0, 0)
    assert reused.usage_metadata["input_token_details"]["cache_read"] == stats["reused_tokens"]
    assert full.response_metadata["egtlm"]["reused_tokens"] == 0
    assert reused.content == full.content and ANSWER in reused.content
    assert (_chain(retriever, reuse_cache=True) | StrOutputParser()).invoke(QUESTION) == reused.content


def test_four_documents_are_spliced(chroma_store):
    retriever = _retriever(chroma_store, k=4)
    reused = _chain(retriever, reuse_cache=True).invoke(QUESTION)
    full = _chain(retriever, reuse_cache=False).invoke(QUESTION)
    stats = reused.response_metadata["egtlm"]
    assert stats["hits"] == 5 and stats["misses"] == 0 and stats["other_prefix_hits"] == 0
    # Documents 2-4 never attended to the ones before them (the approximation, docs/shared_cache.md):
    # they are reported as approximate, though their states were captured after this chain's head.
    assert (stats["exact_slots"], stats["approximate_slots"], stats["approximate_hits"]) == (1, 3, 3)
    # The plan cuts the prompt's own tokenization: reuse and full prefill see the same token ids.
    planned = stats["reused_tokens"] + stats["prefilled_tokens"]
    assert planned == full.usage_metadata["input_tokens"] == reused.usage_metadata["input_tokens"]
    assert reused.content.strip() and full.content.strip()


def test_states_captured_under_the_default_prefix_are_reused_as_approximate_hits(paragraphs):
    from langchain_egtlm import EgtLMCacheRetriever

    # No prompt given: the states are captured after egtlm's default RAG prefix (own index here).
    retriever = EgtLMCacheRetriever.from_texts(paragraphs[:2], k=1, model_kwargs=FLOAT32)
    other = ChatPromptTemplate.from_messages([("human", "Context:\n{context}\n\nAnswer briefly: {question}")])
    reused = _chain(retriever, reuse_cache=True, prompt=other).invoke(QUESTION)
    stats = reused.response_metadata["egtlm"]
    assert stats["reused_tokens"] > 0 and stats["other_prefix_hits"] == 1 and stats["misses"] <= 1
    assert stats["approximate_hits"] == 1 and stats["exact_slots"] == 0
    assert reused.content.strip()
