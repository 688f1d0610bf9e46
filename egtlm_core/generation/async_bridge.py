"""Run blocking work in a worker thread and await it from asyncio without blocking the loop.

Framework-free: the LangChain chat model's async methods and the server's handlers both use it.

Each call gets its own daemon thread rather than the loop's default executor: generations queue for
the process-wide generation slot, and queued ones must not hold the executor threads other async
work (embeddings) needs. The work receives a `threading.Event` that is set when the awaiting task
is cancelled or the consumer stops early, so it can stop (a generation stops within one token).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")


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
    queue. Errors are re-raised here; when the consumer stops early `cancelled` is set, which the
    iterator should check between items."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
    cancelled = threading.Event()

    def put(kind: str, value: Any) -> None:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, (kind, value))
        except RuntimeError:  # the loop closed under us; nobody is listening any more
            cancelled.set()

    def work() -> None:
        try:
            for item in make(cancelled):
                put("item", item)
        except BaseException as err:  # re-raised in the consumer
            put("error", err)
        else:
            put("end", None)

    threading.Thread(target=work, name=name, daemon=True).start()
    try:
        while True:
            kind, value = await queue.get()
            if kind == "error":
                raise value
            if kind == "end":
                return
            yield value
    finally:
        cancelled.set()
