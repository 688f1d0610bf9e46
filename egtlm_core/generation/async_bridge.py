"""Run blocking work in a worker thread and await it from asyncio without blocking the loop.

Framework-free: the LangChain chat model's async methods and the server's handlers both use it.

Each call gets its own daemon thread rather than the loop's default executor: generations queue for
the process-wide generation slot, and queued ones must not hold the executor threads other async
work (embeddings) needs. The work receives a `threading.Event` that is set when the awaiting task
is cancelled or the consumer stops early, so it can stop (a generation stops within one token).

`iterate_in_thread` hands items over with backpressure: its thread takes the next item from the
source only while fewer than `ITEMS_AHEAD` wait unread, so a consumer that holds the async iterator
without reading pauses the source (and a stream's generation behind it), and one that closes it,
drops it or is cancelled closes the source at once.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")
ITEMS_AHEAD = 16  # items iterate_in_thread takes from its source before the consumer reads them
_POLL_S = 0.02  # how often a thread waiting for the consumer looks whether it went away


async def run_in_thread(work: Callable[[threading.Event], T], name: str) -> T:
    """`work(cancelled)` in a daemon thread; cancelling the awaiting task sets `cancelled`."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()
    cancelled = threading.Event()

    def settle(value: Any, error: BaseException | None) -> None:
        if future.done():  # the awaiting task was cancelled
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(value)

    def run() -> None:
        try:
            value, error = work(cancelled), None
        except BaseException as err:  # re-raised in the awaiting task
            value, error = None, err
        try:
            loop.call_soon_threadsafe(settle, value, error)
        except RuntimeError:  # the loop closed; nobody is waiting
            pass

    threading.Thread(target=run, name=name, daemon=True).start()
    try:
        return await future
    finally:
        cancelled.set()


async def iterate_in_thread(make: Callable[[threading.Event], Iterator[T]], name: str) -> AsyncIterator[T]:
    """Items of `make(cancelled)`, produced in a daemon thread and handed over through an asyncio
    queue, at most `ITEMS_AHEAD` ahead of the consumer. Errors are re-raised here; when the consumer
    stops early `cancelled` is set, which the iterator should check between items, and the iterator
    is closed as soon as its thread is between items."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
    cancelled = threading.Event()
    room = threading.Semaphore(ITEMS_AHEAD)  # one taken per item handed over, given back as read

    def put(kind: str, value: Any) -> None:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, (kind, value))
        except RuntimeError:  # the loop closed under us; nobody is listening any more
            cancelled.set()

    def wait_for_room() -> bool:
        while not room.acquire(timeout=_POLL_S):
            if cancelled.is_set() or loop.is_closed():
                return False
        return not cancelled.is_set()

    def work() -> None:
        items: Iterator[T] | None = None
        end = object()
        try:
            items = iter(make(cancelled))
            while wait_for_room():
                item = next(items, end)
                if item is end:
                    put("end", None)
                    return
                put("item", item)
        except BaseException as err:  # re-raised in the consumer
            put("error", err)
        finally:
            close = getattr(items, "close", None)
            if close is not None:  # the consumer went away: stop the source now (no-op once it ended)
                close()

    threading.Thread(target=work, name=name, daemon=True).start()
    try:
        while True:
            kind, value = await queue.get()
            if kind == "error":
                raise value
            if kind == "end":
                return
            room.release()
            yield value
    finally:
        cancelled.set()
