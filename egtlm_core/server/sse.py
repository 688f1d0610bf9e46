"""Server-sent events, and stopping work when the client goes away.

A generation runs in a worker thread (`generation.async_bridge`); when the awaiting task is cancelled
the thread's `cancelled` event is set and the generation ends before its next token. These helpers
cancel that task as soon as the client disconnects: they poll the connection while waiting, so a
request still queued for the generation slot (no token sent yet) is dropped too.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeVar

from fastapi import Request

from .errors import APIError

T = TypeVar("T")
POLL_S = 0.1  # how often a waiting handler looks at the connection
DONE = b"data: [DONE]\n\n"


def event(data: Any) -> bytes:
    """One SSE event carrying JSON."""
    return b"data: " + json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"


async def until_disconnect(request: Request, work: Awaitable[T]) -> T:
    """The result of `work`; cancelled (and a 499-style error raised) if the client disconnects."""
    task = asyncio.ensure_future(work)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=POLL_S)
            if done:
                return task.result()
            if await request.is_disconnected():
                raise APIError(499, "The client closed the connection.")
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task


async def while_connected(request: Request, items: AsyncIterator[T]) -> AsyncIterator[T]:
    """`items` until they end or the client disconnects; the source is closed either way."""
    it = items.__aiter__()
    pending: asyncio.Future[T] | None = None
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(it.__anext__())
            done, _ = await asyncio.wait({pending}, timeout=POLL_S)
            if not done:
                if await request.is_disconnected():
                    return
                continue
            try:
                item = pending.result()
            except StopAsyncIteration:
                pending = None
                return
            pending = None
            yield item
    finally:
        if pending is not None and not pending.done():
            pending.cancel()
            with contextlib.suppress(BaseException):
                await pending
        aclose = getattr(it, "aclose", None)
        if aclose is not None:
            with contextlib.suppress(BaseException):
                await aclose()
