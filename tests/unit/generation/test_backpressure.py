"""Streams are pulled by their reader: a stream that is held but not read stops generating after a
small buffer, closing or dropping it stops the generation at once, reading it all still gives the
whole greedy answer, and a paused stream never keeps another generation waiting for its slot.
The asyncio bridge hands items over with the same backpressure."""

from __future__ import annotations

import asyncio
import gc
import threading
import time

import pytest
from step_counter import Counter

from egtlm_core import EgtLM
from egtlm_core.generation import iterate_in_thread
from egtlm_core.generation.async_bridge import ITEMS_AHEAD
from egtlm_core.generation.limit import generation_limit
from egtlm_core.generation.streaming import STREAM_BUFFER

LONG = [{"role": "user", "content": "Tell me about the fox"}]
MANY = 400  # far more tokens than any test lets through
PAUSE_WINDOW_S = 1.0  # how long a held stream is watched; a generation that kept going would pass its bound


@pytest.fixture(scope="module")
def m(tiny_llama_dir) -> EgtLM:
    return EgtLM(str(tiny_llama_dir), torch_dtype="float32")


def generate_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "egtlm-generate" and t.is_alive()]


def passes(counter: Counter, bound: int, within: float = PAUSE_WINDOW_S) -> bool:
    """Whether more than `bound` decoding steps ran within `within` seconds."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline and counter.calls <= bound:
        time.sleep(0.01)
    return counter.calls > bound


def held_after_two(m: EgtLM, counter: Counter, max_new_tokens: int = MANY):
    """A stream read for two pieces by a `for` loop that broke out, still held; the decoding steps
    that had run when the second piece came; the bound a paused generation stays within (each token
    puts one item in the streamer: STREAM_BUFFER unread ones, plus the one it is pausing on)."""
    stream = m.stream_chat(LONG, max_new_tokens=max_new_tokens, logits_processor=[counter])
    for i, _ in enumerate(stream):
        if i == 1:
            break
    at_break = counter.calls
    return stream, at_break, at_break + STREAM_BUFFER + 1


def closes_within(stream, timeout: float = 5.0) -> bool:
    closer = threading.Thread(target=stream.close)
    closer.start()
    closer.join(timeout)
    return not closer.is_alive()


def test_a_held_unread_stream_pauses_after_a_small_buffer_and_goes_on_when_read(m):
    assert not generate_threads()
    counter = Counter(m)
    stream, at_break, bound = held_after_two(m, counter)
    (thread,) = generate_threads()
    assert not passes(counter, bound)  # the issue: it went on to max_new_tokens
    assert counter.calls < MANY // 10
    assert thread.is_alive()  # paused in the streamer, not finished
    # Reading on resumes it: more pieces come, and more steps run.
    paused_at = counter.calls
    more = [next(stream) for _ in range(STREAM_BUFFER + 4)]
    assert all(more)
    assert passes(counter, paused_at)
    assert closes_within(stream)
    assert not thread.is_alive() and not generate_threads()


def test_close_stops_a_paused_stream_at_once(m):
    counter = Counter(m)
    stream, _, bound = held_after_two(m, counter)
    (thread,) = generate_threads()
    assert not passes(counter, bound)  # paused
    assert closes_within(stream)  # woke the paused generate, which ended at its stopping criterion
    assert not thread.is_alive()
    assert counter.calls <= bound + 1  # at most the one step that was under way
    assert stream.result.finish_reason == "cancelled"
    assert stream.result.completion_tokens == counter.calls
    assert list(stream) == []


def test_dropping_a_paused_stream_stops_it(m):
    counter = Counter(m)
    stream, _, bound = held_after_two(m, counter)
    (thread,) = generate_threads()
    assert not passes(counter, bound)
    del stream
    gc.collect()
    thread.join(timeout=5)
    assert not thread.is_alive()
    assert counter.calls <= bound + 1


def test_a_stream_read_slowly_to_the_end_gives_chats_greedy_answer(m):
    n = 3 * STREAM_BUFFER  # long enough to pause on the way (EOS is banned by the counter)
    whole = m.chat(LONG, max_new_tokens=n, logits_processor=[Counter(m)])
    counter = Counter(m)
    stream = m.stream_chat(LONG, max_new_tokens=n, logits_processor=[counter])
    first = next(stream)
    assert not passes(counter, counter.calls + STREAM_BUFFER + 1)  # it paused for the slow reader
    assert counter.calls < n
    pieces = [first, *stream]
    assert "".join(pieces) == whole.text and pieces[0]
    assert stream.result.text == whole.text
    assert stream.result.completion_tokens == whole.completion_tokens == n == counter.calls
    assert stream.result.finish_reason == whole.finish_reason == "length"
    assert not generate_threads()


def test_a_paused_stream_does_not_keep_another_generation_waiting(m):
    """A held stream holds the (CPU) generation slot; when another generation queues for it, the
    paused one runs to its end as it did before the bound, and still hands over every piece."""
    assert generation_limit("cpu").limit == 1  # one generation at a time (the default on CPU)
    n = 4 * STREAM_BUFFER
    whole = m.chat(LONG, max_new_tokens=n, logits_processor=[Counter(m)])
    counter = Counter(m)
    stream = m.stream_chat(LONG, max_new_tokens=n, logits_processor=[counter])
    read = [next(stream), next(stream)]
    assert not passes(counter, counter.calls + STREAM_BUFFER + 1)  # paused, holding the slot
    out: dict[str, object] = {}
    other = threading.Thread(target=lambda: out.update(r=m.chat(LONG, max_new_tokens=3)))
    other.start()
    other.join(60)
    assert not other.is_alive() and out["r"].completion_tokens == 3  # type: ignore[attr-defined]
    assert counter.calls == n  # the paused one finished to free the slot
    assert "".join([*read, *stream]) == whole.text  # nothing it made meanwhile was lost
    assert stream.result.finish_reason == "length"


# --- the asyncio bridge ------------------------------------------------------------------------------
class Source:
    """A counting source for `iterate_in_thread`; notes when it is closed."""

    def __init__(self, slow_after: int | None = None):
        self.made = 0
        self.closed = threading.Event()
        self.slow_after = slow_after

    def __call__(self, cancelled: threading.Event):
        try:
            while True:
                if self.slow_after is not None and self.made >= self.slow_after:
                    cancelled.wait(10)  # a long step; the consumer gives up meanwhile
                self.made += 1
                yield self.made
        finally:
            self.closed.set()


def test_iterate_in_thread_takes_items_only_as_they_are_read_and_closes_the_source():
    source = Source()

    async def main():
        items = iterate_in_thread(source, "test-items")
        got = [await items.__anext__() for _ in range(2)]
        await asyncio.sleep(0.3)  # held, not read
        made = source.made
        await items.aclose()
        return got, made

    got, made = asyncio.run(main())
    assert got == [1, 2]
    assert made <= 2 + ITEMS_AHEAD
    assert source.closed.wait(5)


def test_iterate_in_thread_closes_the_source_when_dropped_or_cancelled():
    dropped, cancelled = Source(), Source(slow_after=3)

    async def main():
        items = iterate_in_thread(dropped, "test-dropped")
        await items.__anext__()
        del items  # the loop's async-generator hook closes it
        gc.collect()
        for _ in range(10):
            await asyncio.sleep(0)

        async def consume():
            return [i async for i in iterate_in_thread(cancelled, "test-cancelled")]

        task = asyncio.create_task(consume())
        while cancelled.made < 3:
            await asyncio.sleep(0.001)
        await asyncio.sleep(0.05)  # the consumer now awaits the slow fourth item
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert dropped.closed.wait(5) and dropped.made <= 1 + ITEMS_AHEAD
    assert cancelled.closed.wait(5) and cancelled.made <= 4


def test_an_async_consumer_that_holds_a_stream_pauses_it_and_closing_stops_it(m):
    """The server's and LangChain's path: a stream read by `iterate_in_thread`'s thread."""
    counter = Counter(m)

    def pieces(cancelled: threading.Event):
        stream = m.stream_chat(LONG, max_new_tokens=MANY, logits_processor=[counter], cancel=cancelled)
        try:
            yield from stream
        finally:
            stream.close()

    async def main():
        items = iterate_in_thread(pieces, "test-astream")
        got = [await items.__anext__() for _ in range(2)]
        (thread,) = generate_threads()
        # Paused: at most ITEMS_AHEAD pieces (each some tokens) and the streamer's buffer ahead.
        held = await asyncio.to_thread(passes, counter, MANY // 2)
        await items.aclose()
        return got, thread, held

    got, thread, held = asyncio.run(main())
    assert len(got) == 2 and not held
    thread.join(timeout=5)
    assert not thread.is_alive() and counter.calls < MANY // 2
