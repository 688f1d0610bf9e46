"""One process-wide limit on concurrent generations, served first come, first served.

On CPU every `generate` call runs torch's own thread pool; 32 concurrent chats on 2 cores start 32
of them, and each gets slower than if they had waited their turn (docs/shared_cache.md measured
the reuse path 13x slower while another job shared the cores). So generations queue for a slot:
by default one at a time on CPU and no limit on accelerators. `EGTLM_MAX_GENERATIONS` (read at
import) or `set_generation_limit` changes the CPU limit; every generation reports how long it
waited (`ChatResult.queue_s`).

Slots are handed from one generation straight to the next in arrival order (a ticket queue), so a
waiter is never overtaken by a later caller. A waiting generation whose cancel event is set leaves
the queue.

A generation decoded in the consumer's own thread (the shared-cache path) holds its slot while the
consumer iterates. If that thread asks for another generation before finishing or closing the
first, waiting would never end; `acquire(consumer=True)` marks such holds, and a thread holding one
gets a RuntimeError instead of a hang.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque

ENV_VAR = "EGTLM_MAX_GENERATIONS"
_POLL_S = 0.02  # how often a waiter looks at its cancel event


class GenerationCancelled(Exception):
    """Raised by `GenerationLimit.acquire` when the waiter's cancel event was set while it queued."""


class GenerationLimit:
    """At most `limit` holders at a time (None: no limit); waiters are served in arrival order."""

    def __init__(self, limit: int | None):
        self._lock = threading.Lock()
        self._active = 0
        self._waiting: deque[threading.Event] = deque()
        self._consumers: dict[int, int] = {}  # thread id -> slots it holds while iterating
        self._limit = _check_limit(limit)

    @property
    def limit(self) -> int | None:
        return self._limit

    @property
    def active(self) -> int:
        with self._lock:
            return self._active

    @property
    def queued(self) -> int:
        """Generations waiting for a slot now."""
        with self._lock:
            return len(self._waiting)

    def set_limit(self, limit: int | None) -> None:
        """Change the limit; waiters that now fit are admitted (in order)."""
        with self._lock:
            self._limit = _check_limit(limit)
            self._admit()

    def _admit(self) -> None:  # under the lock
        while self._waiting and (self._limit is None or self._active < self._limit):
            self._active += 1
            self._waiting.popleft().set()

    def acquire(self, cancel: threading.Event | None = None, consumer: bool = False) -> float:
        """Wait for a slot; returns the seconds waited. Raises `GenerationCancelled` if `cancel` is
        set while waiting (the place in the queue is given up). `consumer=True`: the calling thread
        itself holds the slot until `release(consumer=True)`."""
        start = time.perf_counter()
        me = threading.get_ident()
        with self._lock:
            if not self._waiting and (self._limit is None or self._active < self._limit):
                self._active += 1
                if consumer:
                    self._consumers[me] = self._consumers.get(me, 0) + 1
                return 0.0
            if self._consumers.get(me):
                raise RuntimeError(
                    "This thread is still reading a generation that holds the generation slot; "
                    "finish or close() that stream before starting another (or raise the limit: "
                    f"{ENV_VAR} / set_generation_limit)."
                )
            ticket = threading.Event()
            self._waiting.append(ticket)
        while not ticket.wait(_POLL_S):
            if cancel is not None and cancel.is_set():
                with self._lock:
                    if not ticket.is_set():  # not admitted meanwhile: leave the queue
                        self._waiting.remove(ticket)
                        raise GenerationCancelled
                self.release()  # admitted just now: hand the slot on
                raise GenerationCancelled
        if consumer:
            with self._lock:
                self._consumers[me] = self._consumers.get(me, 0) + 1
        return time.perf_counter() - start

    def release(self, consumer_thread: int | None = None) -> None:
        """Give a slot back; `consumer_thread`: the id of the thread that acquired it with
        `consumer=True` (a generator may be closed from another thread)."""
        with self._lock:
            if self._active <= 0:
                raise RuntimeError("GenerationLimit.release() without a matching acquire().")
            if consumer_thread is not None and self._consumers.get(consumer_thread):
                self._consumers[consumer_thread] -= 1
                if not self._consumers[consumer_thread]:
                    del self._consumers[consumer_thread]
            self._active -= 1
            self._admit()


def _check_limit(limit: int | None) -> int | None:
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"The generation limit must be a positive integer or None, got {limit!r}.")
    return limit


def _limit_from_env() -> int | None:
    raw = os.environ.get(ENV_VAR, "").strip()
    if not raw:
        return 1
    if raw.lower() in ("none", "0", "unlimited"):
        return None
    try:
        return _check_limit(int(raw))
    except ValueError as err:
        raise ValueError(f"{ENV_VAR}={raw!r}: expected a positive integer, or 'none' for no limit.") from err


_CPU = GenerationLimit(_limit_from_env())
_ACCELERATOR = GenerationLimit(None)


def generation_limit(device_type: str = "cpu") -> GenerationLimit:
    """The process-wide limit generations on this kind of device queue for."""
    return _CPU if device_type == "cpu" else _ACCELERATOR


def set_generation_limit(limit: int | None, device_type: str = "cpu") -> None:
    """Allow `limit` concurrent generations on CPU (None: no limit), or on accelerators with
    `device_type="cuda"` (none by default).

    Example:
        >>> from egtlm_core.generation.limit import set_generation_limit
        >>> set_generation_limit(2)  # a machine with cores to spare for two decoders
    """
    generation_limit(device_type).set_limit(limit)
