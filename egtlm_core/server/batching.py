"""Micro-batching: concurrent embedding requests share one `encode` call.

On CPU a forward over one short text is mostly fixed cost (30 layers of small matmuls and Python);
32 texts in one forward cost a few times one. So requests queue here: the first waits up to
`max_wait_s` for others, up to `max_batch` texts (a request is never split, so a batch may end one
request over), and each group of requests with the same settings (query/document, dimensions) goes
through one `encode` call in the one embedding thread. Each request then gets its own rows back;
batched rows equal single ones within 1e-5 (the core pads and masks so, see docs/architecture.md).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

# (texts, input_type, dimensions) -> (vectors [n, d], tokens per text)
EmbedFn = Callable[[list[str], str, "int | None"], tuple[np.ndarray, list[int]]]
BatchHook = Callable[[int, int, float], None]  # (requests, texts, seconds) after each encode call


@dataclass
class _Job:
    texts: list[str]
    key: tuple[str, int | None]
    future: asyncio.Future[tuple[np.ndarray, list[int], float]]
    queued_at: float = field(default_factory=time.perf_counter)


class EmbeddingBatcher:
    """Collects embedding requests and runs them as few `encode` calls as the timing allows.

    `max_batch=1` turns batching off (each request its own call, in arrival order): the baseline
    the load benchmark compares against.
    """

    def __init__(self, embed: EmbedFn, max_batch: int, max_wait_s: float, on_batch: BatchHook | None = None):
        self._embed = embed
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self._on_batch = on_batch
        self._queue: asyncio.Queue[_Job] | None = None
        self._task: asyncio.Task[None] | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="egtlm-embed")

    def start(self) -> None:
        """Start the batching loop on the running event loop."""
        self._queue = asyncio.Queue()
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="egtlm-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def embed(
        self, texts: list[str], input_type: str, dimensions: int | None
    ) -> tuple[np.ndarray, list[int], float]:
        """(vectors, tokens per text, seconds queued) for one request's texts."""
        if self._queue is None:
            raise RuntimeError("The embedding batcher was not started.")
        job = _Job(list(texts), (input_type, dimensions), asyncio.get_running_loop().create_future())
        self._queue.put_nowait(job)
        return await job.future

    async def _collect(self, first: _Job) -> list[_Job]:
        assert self._queue is not None
        batch, size = [first], len(first.texts)
        deadline = time.perf_counter() + self.max_wait_s
        while size < self.max_batch:
            try:
                job = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                left = deadline - time.perf_counter()
                if left <= 0:
                    break
                try:
                    job = await asyncio.wait_for(self._queue.get(), left)
                except TimeoutError:
                    break
            batch.append(job)
            size += len(job.texts)
        return batch

    async def _loop(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._collect(await self._queue.get())
            groups: dict[tuple[str, int | None], list[_Job]] = {}
            for job in batch:
                if not job.future.done():  # a client that went away is not embedded
                    groups.setdefault(job.key, []).append(job)
            for (input_type, dim), jobs in groups.items():
                texts = [t for job in jobs for t in job.texts]
                started = time.perf_counter()
                try:
                    vectors, tokens = await loop.run_in_executor(
                        self._executor, self._embed, texts, input_type, dim
                    )
                except Exception as err:  # every request of the call gets the error
                    for job in jobs:
                        if not job.future.done():
                            job.future.set_exception(err)
                    continue
                if self._on_batch is not None:
                    self._on_batch(len(jobs), len(texts), time.perf_counter() - started)
                row = 0
                for job in jobs:
                    n = len(job.texts)
                    if not job.future.done():
                        job.future.set_result(
                            (vectors[row : row + n], tokens[row : row + n], started - job.queued_at)
                        )
                    row += n

    @property
    def pending(self) -> int:
        return 0 if self._queue is None else self._queue.qsize()
