"""Running `generate` for one chat: in a worker thread, in a generation slot, stoppable.

The consumer reads text pieces from a streamer while `generate` runs in a thread that holds one of
the process-wide generation slots (`limit.py`) until it ends. A stopping criterion checked before
every token ends it early once the caller's `cancel` event is set or the consumer closes the pieces
(breaking out of a loop over them, `close()`, or dropping them). Stop strings are cut from the text
as it streams (`StopFilter`).

The streamer's queue is bounded (`_PieceBuffer`, `STREAM_BUFFER` items, about one per token), so
generation is pulled by its reader: a stream that is held but not read pauses `generate` inside the
streamer once that many pieces wait unread, and goes on when they are read. A paused generation
never blocks others forever: while another generation queues for its slot it runs to its end
unpaused (as every stream did before the bound), so that the slot comes free.
"""

from __future__ import annotations

import copy
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import torch
from transformers import (
    GenerationConfig,
    StoppingCriteria,
    StoppingCriteriaList,
    TextIteratorStreamer,
)

from .limit import GenerationCancelled, generation_limit

if TYPE_CHECKING:
    from .chat import ChatResult

STREAM_BUFFER = 16  # streamer items (about one per generated token) a generation may run ahead of its reader
_POLL_S = 0.02  # how often a paused generation looks at its cancel event and the slot queue


def as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


class _Cancelled(StoppingCriteria):
    """Ends `generate` before the next token once any of its events is set."""

    def __init__(self, *events: threading.Event | None):
        self.events = [e for e in events if e is not None]

    def __call__(
        self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any
    ) -> torch.BoolTensor:
        stop = any(e.is_set() for e in self.events)
        flags = torch.full((input_ids.shape[0],), stop, dtype=torch.bool, device=input_ids.device)
        return flags  # type: ignore[return-value]


class _PieceBuffer:
    """The text pieces between `generate`'s thread and the reader, at most `size` of them unread.

    `put` (in the generate thread, once per token) waits while `size` pieces are unread, which pauses
    `generate` between two tokens. It goes on, past the bound, when `go_on()` says so (the caller
    cancelled: generate ends within a token and the reader still gets its pieces; or another
    generation waits for this one's slot), and drops the piece once the reader is gone (`close`).
    """

    def __init__(self, size: int, go_on: Callable[[], bool]):
        self.size = size
        self.go_on = go_on
        self.gone = False
        self._items: deque[str | None] = deque()
        self._changed = threading.Condition()

    def put(self, item: str | None, wait: bool = True) -> None:
        with self._changed:
            while wait and len(self._items) >= self.size and not self.gone and not self.go_on():
                self._changed.wait(_POLL_S)
            if not self.gone:
                self._items.append(item)
                self._changed.notify_all()

    def get(self) -> str | None:
        with self._changed:
            while not self._items:
                self._changed.wait()
            item = self._items.popleft()
            self._changed.notify_all()  # room for a paused generate
            return item

    def close(self) -> None:
        """The reader is gone: drop what is buffered and let a paused `put` return at once."""
        with self._changed:
            self.gone = True
            self._items.clear()
            self._changed.notify_all()


class _TimedStreamer(TextIteratorStreamer):
    """A `TextIteratorStreamer` whose pieces go through a bounded `_PieceBuffer`; also notes when
    the first generated token arrives (the pieces lag it by whole words)."""

    first_token_at: float | None = None

    def __init__(self, tokenizer: Any, buffer: _PieceBuffer):
        super().__init__(tokenizer, skip_prompt=True, skip_special_tokens=True)
        self.buffer = buffer

    def put(self, value: torch.Tensor) -> None:
        if self.first_token_at is None and not (self.skip_prompt and self.next_tokens_are_prompt):
            self.first_token_at = time.perf_counter()
        super().put(value)

    def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
        # The last piece and the end mark never wait: generating is over, waiting saves nothing.
        self.buffer.put(text, wait=not stream_end)
        if stream_end:
            self.buffer.put(self.stop_signal, wait=False)

    def __next__(self) -> str:
        value = self.buffer.get()
        if value is None:  # the stop signal
            raise StopIteration
        return value


class StopFilter:
    """Holds back streamed text that could still become a stop string; cuts at the first stop."""

    def __init__(self, stop: Sequence[str]):
        self.stop = [s for s in stop if s]
        self.pending = ""
        self.stopped = False

    def feed(self, piece: str) -> str:
        if self.stopped:
            return ""
        self.pending += piece
        hits = [self.pending.find(s) for s in self.stop if s in self.pending]
        if hits:
            self.stopped = True
            out, self.pending = self.pending[: min(hits)], ""
            return out
        hold = max(
            (k for s in self.stop for k in range(1, len(s)) if self.pending.endswith(s[:k])), default=0
        )
        out = self.pending[: len(self.pending) - hold]
        self.pending = self.pending[len(out) :]
        return out

    def flush(self) -> str:
        out, self.pending = ("" if self.stopped else self.pending), ""
        return out


def _generate_kwargs(
    model: Any,
    tokenizer: Any,
    ids: torch.Tensor,
    config: GenerationConfig,
    stop: list[str],
    logits_processor: Any,
) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "generation_config": config,
    }
    if stop:  # in the config, not as a generate kwarg (deprecated beside a generation_config)
        kwargs["generation_config"] = copy.copy(config)
        kwargs["generation_config"].stop_strings = stop
        kwargs["tokenizer"] = tokenizer
    if logits_processor is not None:
        kwargs["logits_processor"] = logits_processor
    return kwargs


class _Generation:
    """One `generate` call in a worker thread that holds a generation slot while it runs, pulled by
    its reader through a bounded streamer."""

    def __init__(self, model: Any, tokenizer: Any, kwargs: dict[str, Any], cancel: Any):
        self.closed = threading.Event()  # the consumer went away
        self.cancel = cancel
        self.limit = generation_limit(model.device.type)
        self.buffer = _PieceBuffer(STREAM_BUFFER, self._go_on)
        self.streamer = _TimedStreamer(tokenizer, self.buffer)
        kwargs["streamer"] = self.streamer
        kwargs["stopping_criteria"] = StoppingCriteriaList([_Cancelled(cancel, self.closed)])
        self.model, self.kwargs = model, kwargs
        self.outcome: dict[str, Any] = {}
        self.started_at = 0.0
        self.thread = threading.Thread(target=self._work, name="egtlm-generate", daemon=True)

    def _go_on(self) -> bool:
        """Whether generating goes on although the reader is `STREAM_BUFFER` pieces behind: it was
        cancelled (and ends within a token), or its slot is wanted (a reader that holds the stream
        and never reads on must not keep other generations waiting forever)."""
        return (self.cancel is not None and self.cancel.is_set()) or self.limit.queued > 0

    def start(self) -> float:
        """Wait for a slot (raises GenerationCancelled), start generating; returns the queue time."""
        queued = self.limit.acquire(self.cancel)
        self.started_at = time.perf_counter()  # before the thread: its first token may come at once
        try:
            self.thread.start()
        except BaseException:
            self.limit.release()
            raise
        return queued

    def _work(self) -> None:
        try:
            with torch.inference_mode():
                self.outcome["sequences"] = self.model.generate(**self.kwargs)
        except BaseException as err:  # surfaced in the caller's thread
            self.outcome["error"] = err
            self.streamer.end()
        finally:
            self.limit.release()

    def stop(self) -> None:
        """The consumer stopped early: end generate before its next token and wait for it."""
        self.closed.set()
        self.buffer.close()  # a paused generate goes on to its stopping criterion at once
        if self.thread is not threading.current_thread():  # (a stream finalized by gc in that thread)
            self.thread.join()

    def new_tokens(self, prompt_length: int) -> torch.Tensor:
        sequences = self.outcome.get("sequences")
        return sequences[0, prompt_length:] if sequences is not None else torch.zeros(0, dtype=torch.long)


def generate_stream(
    model: Any,
    tokenizer: Any,
    prompt_ids: Sequence[int],
    config: GenerationConfig,
    stop: Sequence[str],
    logits_processor: Any,
    result: ChatResult,
    cancel: threading.Event | None = None,
) -> Iterator[str]:
    """Text pieces of `generate` over the prompt, run in a worker thread holding a generation slot;
    `result` is filled when they are exhausted or closed."""
    stop = list(stop or ())
    ids = torch.tensor([list(prompt_ids)], device=model.device)
    kwargs = _generate_kwargs(model, tokenizer, ids, config, stop, logits_processor)
    job = _Generation(model, tokenizer, kwargs, cancel)
    streamer = job.streamer
    try:
        result.queue_s = job.start()
    except GenerationCancelled:
        result.prompt_tokens, result.finish_reason = ids.shape[1], "cancelled"
        return
    start = job.started_at
    stop_filter, pieces = StopFilter(stop), []
    try:
        for piece in streamer:
            text = stop_filter.feed(piece)
            if text:
                pieces.append(text)
                yield text
    except BaseException:  # GeneratorExit: the consumer closed or dropped the stream
        job.stop()
        _fill(result, job.new_tokens(ids.shape[1]), ids.shape[1], pieces, "cancelled", streamer, start)
        raise
    job.thread.join()
    if "error" in job.outcome:
        raise job.outcome["error"]
    tail = stop_filter.flush()
    if tail:
        pieces.append(tail)
        yield tail
    new = job.new_tokens(ids.shape[1])
    _fill(
        result, new, ids.shape[1], pieces, _finish_reason(new, config, stop_filter, cancel), streamer, start
    )


def _finish_reason(new: torch.Tensor, config: GenerationConfig, stop_filter: StopFilter, cancel: Any) -> str:
    if (len(new) > 0 and int(new[-1]) in as_list(config.eos_token_id)) or stop_filter.stopped:
        return "stop"
    if config.max_new_tokens is not None and len(new) >= config.max_new_tokens:
        return "length"
    return "cancelled" if cancel is not None and cancel.is_set() else "stop"


def _fill(
    result: ChatResult,
    new: torch.Tensor,
    prompt_tokens: int,
    pieces: list[str],
    finish_reason: str,
    streamer: _TimedStreamer,
    start: float,
) -> None:
    result.text = "".join(pieces)
    result.prompt_tokens = prompt_tokens
    result.completion_tokens = len(new)
    result.finish_reason = finish_reason
    result.ttft_s = None if streamer.first_token_at is None else streamer.first_token_at - start
    result.total_s = time.perf_counter() - start


def in_slot(
    pieces: Iterator[str], device_type: str, cancel: threading.Event | None, result: ChatResult | None
) -> Iterator[str]:
    """Pieces decoded in the consumer's thread (`decode.decode_stream`, which ends at a set
    `cancel` itself), holding a generation slot until they end or the stream is closed."""
    limit = generation_limit(device_type)
    me = threading.get_ident()
    try:
        queued = limit.acquire(cancel, consumer=True)
    except GenerationCancelled:
        if result is not None:
            result.finish_reason = "cancelled"
        return
    try:
        yield from pieces
    finally:
        limit.release(consumer_thread=me)
        if result is not None:
            result.queue_s = queued
