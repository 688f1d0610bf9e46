"""Small bridges over transformers versions (≥5.3): the cache keyword is being renamed."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any


@functools.lru_cache(maxsize=32)
def _cache_kwarg_of(fn: Callable[..., Any]) -> str:
    params = inspect.signature(fn).parameters
    return "cache" if "cache" in params else "past_key_values"


def cache_kwarg(fn: Callable[..., Any]) -> str:
    """`cache` on transformers versions that renamed it (5.2x), else `past_key_values`."""
    return _cache_kwarg_of(getattr(fn, "__func__", fn))
