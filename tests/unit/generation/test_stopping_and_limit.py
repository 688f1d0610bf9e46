"""Generations stop when their consumer goes away, queue for one process-wide slot in arrival
order, and refuse options they do not know."""

from __future__ import annotations

import shutil
import threading
import time

import pytest
from step_counter import Counter

from egtlm_core import EgtLM
from egtlm_core.generation.limit import (
    ENV_VAR,
    GenerationLimit,
    _limit_from_env,
    generation_limit,
    set_generation_limit,
)

LONG = [{"role": "user", "content": "Tell me about the fox"}]
MANY = 400  # far more tokens than any test lets through


@pytest.fixture(scope="module")
def m(tiny_llama_dir) -> EgtLM:
    return EgtLM(str(tiny_llama_dir), torch_dtype="float32")


def generate_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "egtlm-generate" and t.is_alive()]


def wait_until(condition, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.002)
    return True


# --- stopping ---------------------------------------------------------------------------------------
def test_breaking_out_of_a_stream_stops_generate_within_a_token(m):
    assert not generate_threads()
    counter = Counter(m)
    at_break = -1
    for _ in m.stream_chat(LONG, max_new_tokens=MANY, logits_processor=[counter]):
        at_break = counter.calls
        break
    # The dropped stream closed itself and waited for the generate thread: it is gone already.
    assert not generate_threads()
    time.sleep(0.2)  # a thread that kept decoding would count on meanwhile
    assert 1 <= at_break <= counter.calls <= at_break + 3 < MANY


def test_close_and_context_manager_stop_and_report(m):
    counter = Counter(m)
    stream = m.stream_chat(LONG, max_new_tokens=MANY, logits_processor=[counter])
    next(stream)
    stream.close()
    assert not generate_threads()
    assert stream.result.finish_reason == "cancelled"
    assert stream.result.completion_tokens == counter.calls < 10
    assert list(stream) == []  # a closed stream has no more pieces

    counter = Counter(m)
    with m.stream_chat(LONG, max_new_tokens=MANY, logits_processor=[counter]) as stream:
        next(stream)
    assert not generate_threads() and counter.calls < 10


def test_a_set_cancel_event_ends_chat_within_one_token(m):
    cancel = threading.Event()
    counter = Counter(m, on_call=lambda n: cancel.set() if n == 5 else None)
    result = m.chat(LONG, max_new_tokens=MANY, logits_processor=[counter], cancel=cancel)
    assert counter.calls == 5 and result.completion_tokens == 5
    assert result.finish_reason == "cancelled"
    assert not generate_threads()


def test_stream_cancel_from_another_thread(m):
    started = threading.Event()
    counter = Counter(m, on_call=lambda n: started.set())
    stream = m.stream_chat(LONG, max_new_tokens=MANY, logits_processor=[counter])
    reader = threading.Thread(target=lambda: list(stream))
    reader.start()
    assert started.wait(20)
    stream.cancel()
    reader.join(20)
    assert not reader.is_alive() and not generate_threads()
    assert stream.result.finish_reason == "cancelled" and stream.result.completion_tokens < MANY


# --- one generation at a time, first come first served ------------------------------------------------
def test_eight_concurrent_chats_never_overlap_and_are_served_in_arrival_order(m):
    limit = generation_limit("cpu")
    assert limit.limit == 1 and limit.active == 0 and limit.queued == 0
    gate = threading.Event()
    counters = [Counter(m, on_call=(lambda n: gate.wait(20)) if i == 0 else None) for i in range(8)]
    results: dict[int, object] = {}

    def run(i: int) -> None:
        results[i] = m.chat(LONG, max_new_tokens=6, logits_processor=[counters[i]])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(8)]
    threads[0].start()
    assert wait_until(lambda: counters[0].calls == 1)  # chat 0 holds the slot, paused in its first step
    for i in range(1, 8):
        threads[i].start()
        assert wait_until(lambda i=i: limit.queued == i), f"chat {i} did not queue"
    assert counters[1].calls == 0  # nobody runs beside chat 0
    gate.set()
    for t in threads:
        t.join(60)
    spans = [(c.first_at, c.last_at) for c in counters]
    assert all(c.calls == 6 for c in counters)
    assert [i for i, _ in sorted(enumerate(spans), key=lambda s: s[1][0])] == list(range(8))  # arrival order
    for (_, end), (start, _) in zip(spans, spans[1:], strict=False):
        assert start > end  # the next chat decodes only after the previous one finished
    waits = [results[i].queue_s for i in range(8)]
    assert waits[0] == 0.0 and all(w > 0 for w in waits[1:])
    assert all(0 <= results[i].ttft_s <= results[i].total_s for i in range(8))  # counted from the slot
    assert limit.active == 0 and limit.queued == 0


def test_a_queued_chat_whose_cancel_is_set_leaves_the_queue(m):
    limit = generation_limit("cpu")
    gate, cancel = threading.Event(), threading.Event()
    first = Counter(m, on_call=lambda n: gate.wait(20))
    holder = threading.Thread(target=lambda: m.chat(LONG, max_new_tokens=3, logits_processor=[first]))
    holder.start()
    assert wait_until(lambda: first.calls == 1)
    out: dict[str, object] = {}
    waiter_counter = Counter(m)
    waiter = threading.Thread(
        target=lambda: out.update(
            r=m.chat(LONG, max_new_tokens=3, logits_processor=[waiter_counter], cancel=cancel)
        )
    )
    waiter.start()
    assert wait_until(lambda: limit.queued == 1)
    cancel.set()
    waiter.join(20)
    assert not waiter.is_alive() and limit.queued == 0
    assert out["r"].finish_reason == "cancelled" and waiter_counter.calls == 0  # type: ignore[attr-defined]
    gate.set()
    holder.join(20)
    assert limit.active == 0


def test_the_limit_is_configurable():
    limit = GenerationLimit(2)
    assert limit.acquire() == 0.0 and limit.acquire() == 0.0 and limit.active == 2
    got: list[float] = []
    waiter = threading.Thread(target=lambda: got.append(limit.acquire()))
    waiter.start()
    assert wait_until(lambda: limit.queued == 1)
    limit.set_limit(3)  # room now: the waiter is admitted
    waiter.join(5)
    assert got and limit.active == 3
    for _ in range(3):
        limit.release()
    with pytest.raises(RuntimeError, match="without a matching acquire"):
        limit.release()
    with pytest.raises(ValueError, match="positive integer or None"):
        set_generation_limit(0)
    assert generation_limit("cuda").limit is None  # accelerators: no limit unless set


@pytest.mark.parametrize(("raw", "want"), [("", 1), ("3", 3), ("none", None), ("unlimited", None)])
def test_the_cpu_limit_comes_from_the_environment(monkeypatch, raw, want):
    monkeypatch.setenv(ENV_VAR, raw)
    assert _limit_from_env() == want


def test_a_bad_environment_limit_names_the_variable(monkeypatch):
    monkeypatch.setenv(ENV_VAR, "two")
    with pytest.raises(ValueError, match=ENV_VAR):
        _limit_from_env()


# --- options ------------------------------------------------------------------------------------------
def test_mistyped_options_are_refused_with_the_valid_names(m):
    with pytest.raises(TypeError, match=r"\['max_tokens'\] \(did you mean 'max_tokens' -> 'max_new_tokens'"):
        m.chat(LONG, max_tokens=10)
    with pytest.raises(TypeError, match="the options are .*'max_new_tokens'.*chat_template_kwargs"):
        m.stream_chat(LONG, max_tokens=10)
    with pytest.raises(TypeError, match=r"Unknown chat option\(s\) \['greeting'\]"):
        m.chat(LONG, greeting="hi")  # template arguments go in chat_template_kwargs
    with pytest.raises(ValueError, match=r"may not set \['add_generation_prompt'\]"):
        m.chat(LONG, chat_template_kwargs={"add_generation_prompt": False})
    with pytest.raises(TypeError, match="must be a dict"):
        m.chat(LONG, chat_template_kwargs=["tools"])


def test_chat_template_kwargs_reach_the_template(m, monkeypatch):
    template = "{{ greeting }}" + m.tokenizer.chat_template
    monkeypatch.setattr(m.tokenizer, "chat_template", template)
    want = m.tokenizer.apply_chat_template(
        LONG, add_generation_prompt=True, tokenize=True, return_dict=True, greeting="Hello there fox"
    )["input_ids"]
    plain = m.chat(LONG, max_new_tokens=2)
    greeted = m.chat(LONG, max_new_tokens=2, chat_template_kwargs={"greeting": "Hello there fox"})
    assert greeted.prompt_tokens == len(want) > plain.prompt_tokens


def test_a_thread_reading_a_generation_that_holds_the_slot_gets_an_error_not_a_hang():
    limit = GenerationLimit(1)
    me = threading.get_ident()
    limit.acquire(consumer=True)
    with pytest.raises(RuntimeError, match="finish or close"):
        limit.acquire()
    other: list[float] = []
    waiter = threading.Thread(target=lambda: other.append(limit.acquire()))  # another thread just waits
    waiter.start()
    assert wait_until(lambda: limit.queued == 1)
    limit.release(consumer_thread=me)
    waiter.join(5)
    assert other and limit.active == 1
    limit.release()
    assert limit.acquire() == 0.0  # the consumer mark is gone with its slot
    limit.release()


def test_a_half_read_reuse_stream_then_chat_in_the_same_thread_raises(tiny_llama_dir):
    from egtlm_core.cache import MemoryTier

    lm = EgtLM(str(tiny_llama_dir), torch_dtype="float32", cache_store=MemoryTier())
    docs = ["The quick brown fox jumps over the lazy dog.", "A cat sat on the mat."]
    pieces = lm.answer("Tell me about the fox", documents=docs, max_new_tokens=60, stream=True)
    next(iter(pieces))
    with pytest.raises(RuntimeError, match="finish or close"):
        lm.chat(LONG, max_new_tokens=2)
    pieces.close()
    assert lm.chat(LONG, max_new_tokens=2).completion_tokens == 2


def test_cancel_ends_the_shared_cache_decoding_within_one_token(tiny_llama_dir, tmp_path):
    """The reuse path decodes in the reading thread without `generate`; a set cancel stops it too."""
    from egtlm_core.cache import MemoryTier

    # Own weights: documents handed out here must not be spliced in other tests' prompts.
    own = shutil.copytree(tiny_llama_dir, tmp_path / "own")
    lm = EgtLM(str(own), torch_dtype="float32", cache_store=MemoryTier())
    doc = " ".join(["Retrieval augmented generation reads documents before answering questions."] * 2)
    lm.index([doc])
    lm._rag.remember([doc])  # handed out, as a retriever does: chat may splice it
    messages = [{"role": "user", "content": f"Documents:\n{doc}\n\nQuestion: what does it read?"}]
    cancel = threading.Event()
    counter = Counter(lm, on_call=lambda n: cancel.set() if n == 5 else None)
    result = lm.chat(
        messages, max_new_tokens=MANY, reuse_cache=True, logits_processor=[counter], cancel=cancel
    )
    assert result.reuse is not None and result.reused_tokens > 0  # the spliced, generate-free path
    assert counter.calls == 5 and result.completion_tokens == 5
    assert result.finish_reason == "cancelled"
