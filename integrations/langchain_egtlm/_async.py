"""Run a blocking iterator in a worker thread and consume it from asyncio without blocking the loop."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")


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
