"""Small bridges over transformers versions (≥5.3): the cache keyword is being renamed."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

import torch


@functools.lru_cache(maxsize=32)
def _cache_kwarg_of(fn: Callable[..., Any]) -> str:
    params = inspect.signature(fn).parameters
    return "cache" if "cache" in params else "past_key_values"


def cache_kwarg(fn: Callable[..., Any]) -> str:
    """`cache` on transformers versions that renamed it (5.2x), else `past_key_values`."""
    return _cache_kwarg_of(getattr(fn, "__func__", fn))


def layer_states(cache: Any) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(keys, values) of every layer of a filled transformers cache, [batch, kv_heads, seq, head_dim]."""
    out = []
    for i, layer in enumerate(cache.layers):
        keys, values = getattr(layer, "keys", None), getattr(layer, "values", None)
        if keys is None or values is None:
            raise ValueError(f"Cache layer {i} ({type(layer).__name__}) holds no key/value states.")
        out.append((keys, values))
    return out


def expanded_cache(prefix: Any | None, batch: int, config: Any) -> Any:
    """A new `DynamicCache` holding `prefix`'s states once per row (views: `prefix` is never written
    to, and gradients through the views reach it); an empty one without a prefix."""
    from transformers import DynamicCache

    if prefix is None:
        return DynamicCache(config=config)
    data = [(k.expand(batch, -1, -1, -1), v.expand(batch, -1, -1, -1)) for k, v in layer_states(prefix)]
    return DynamicCache(ddp_cache_data=data, config=config)
