"""`ChatEgtLM` stops generating when LangChain stops listening, waits its turn for the generation
slot (and says how long), and refuses settings it does not know; so do the other adapters."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from langchain_egtlm import ChatEgtLM, EgtLMCacheRetriever, EgtLMEmbeddings
from step_counter import Counter

from egtlm_core import EgtLM

MANY = 400  # far more tokens than any test lets through
PROMPT = "Tell me about the fox"


def counted(lm: EgtLM, monkeypatch, on_call=None) -> list[Counter]:
    """Give every chat / stream_chat call of `lm` a fresh Counter; returns them in call order."""
    counters: list[Counter] = []
    chat_fn, stream_fn = lm.chat, lm.stream_chat

    def with_counter(fn):
        def call(*args, **kwargs):
            counters.append(Counter(lm, on_call))
            kwargs["logits_processor"] = [counters[-1]]
            return fn(*args, **kwargs)

        return call

    monkeypatch.setattr(lm, "chat", with_counter(chat_fn))
    monkeypatch.setattr(lm, "stream_chat", with_counter(stream_fn))
    return counters


def generate_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "egtlm-generate" and t.is_alive()]


def settled(timeout: float = 10.0) -> bool:
    """Whether every generate thread ended within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while generate_threads():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


@pytest.fixture(scope="module")
def chat(tiny_llama_dir) -> ChatEgtLM:
    return ChatEgtLM(model=str(tiny_llama_dir), model_kwargs={"torch_dtype": "float32"}, max_tokens=MANY)


@pytest.fixture(params=[False, True], ids=["plain", "reuse_cache"])
def any_chat(request, chat) -> ChatEgtLM:
    return chat.model_copy(update={"reuse_cache": request.param})


# --- stopping -------------------------------------------------------------------------------------
def test_breaking_out_of_stream_stops_generate(any_chat, monkeypatch):
    counters = counted(any_chat.client, monkeypatch)
    for _ in any_chat.stream(PROMPT):
        at_break = counters[0].calls
        break
    assert settled(0.5)  # the closed generator chain joined the generate thread
    assert counters[0].calls <= at_break + 3 < MANY


def _cancel_after_start(make_coro, started: threading.Event) -> None:
    async def main():
        task = asyncio.create_task(make_coro())
        while not started.is_set():
            await asyncio.sleep(0.001)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())


def test_cancelling_ainvoke_stops_generate(any_chat, monkeypatch):
    started = threading.Event()
    counters = counted(any_chat.client, monkeypatch, on_call=lambda n: started.set() if n == 3 else None)
    _cancel_after_start(lambda: any_chat.ainvoke(PROMPT), started)
    assert settled()
    assert 3 <= counters[0].calls < 40  # stopped soon after the cancel, not at 400


def test_cancelling_astream_stops_generate(any_chat, monkeypatch):
    started = threading.Event()
    counters = counted(any_chat.client, monkeypatch, on_call=lambda n: started.set() if n == 3 else None)

    async def consume():
        return [c async for c in any_chat.astream(PROMPT)]

    _cancel_after_start(consume, started)
    assert settled()
    assert 3 <= counters[0].calls < 40


# --- one generation at a time -----------------------------------------------------------------------
def test_concurrent_ainvokes_take_turns_and_report_their_queue_time(chat, monkeypatch):
    counters = counted(chat.client, monkeypatch)

    async def main():
        return await asyncio.gather(*(chat.ainvoke(PROMPT, max_tokens=8) for _ in range(8)))

    messages = asyncio.run(main())
    spans = sorted((c.first_at, c.last_at) for c in counters)
    assert len(spans) == 8 and all(c.calls == 8 for c in counters)
    for (_, end), (start, _) in zip(spans, spans[1:], strict=False):
        assert start > end  # never two decoding at once
    waits = [m.response_metadata["egtlm"]["queue_s"] for m in messages]
    assert sum(w > 0 for w in waits) >= 7  # everyone but the first waited for the slot


# --- unknown settings -------------------------------------------------------------------------------
def test_adapters_refuse_unknown_settings(tiny_llama_dir):
    with pytest.raises(
        ValueError, match=r"unknown settings \['max_token'\] \(did you mean 'max_token' -> 'max_tokens'"
    ):
        ChatEgtLM(max_token=5)
    with pytest.raises(ValueError, match="its settings are .*'temperature'"):
        ChatEgtLM(temprature=0.5)
    with pytest.raises(ValueError, match="top_k"):
        EgtLMCacheRetriever(top_k=2)
    with pytest.raises(ValueError, match="modle"):
        EgtLMEmbeddings(modle=str(tiny_llama_dir))
    # hosted-API settings (the standard suites pass them) are accepted and ignored
    assert ChatEgtLM(api_key="x", timeout=5, max_retries=2).max_tokens is None
