"""One `EgtLM` per setting, built on first use and shared by every framework adapter in the process.

Adapters are constructed often (LangChain's standard suite times ten constructions), so they hold
a `LazyLM` and build the model only when first asked to embed or generate. Adapters that ask for the
same source, mode and settings get the *same* `EgtLM` object: one set of weights (the loading
registry shares those anyway) and one shared-cache RAG engine, so documents a retriever stored are
found by the chat model in the same chain. The entries live in the one registry
(`loading.registry.shared`), under keys of their own.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .loading.default_model import DEFAULT_MODEL_NAME
from .loading.registry import shared
from .model import EgtLM


def _freeze(value: Any) -> Any:
    """A hashable stand-in for a setting value (dicts and lists included)."""
    if isinstance(value, Mapping):
        return tuple(sorted((str(k), _freeze(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple, set, frozenset)):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    try:
        hash(value)
    except TypeError:
        return ("id", id(value))
    return value


def shared_lm(
    model: str | os.PathLike | None = None,
    *,
    mode: str = "unified",
    model_kwargs: Mapping[str, Any] | None = None,
    config: Mapping[str, Any] | None = None,
) -> EgtLM:
    """The process-wide `EgtLM` for these settings, built (once, even under threads) if needed.

    Args:
        model: a path, hub id, or None for the packaged default.
        mode: `EgtLM` mode; "unified" (the default) lets embedder and chat share one loaded LM.
        model_kwargs: loading arguments (torch_dtype, device, attn_implementation, ...).
        config: `EgtLMConfig` settings (pooling, attention, instructions, ...).
    """
    model_kwargs = dict(model_kwargs or {})
    config = dict(config or {})
    key = ("EgtLM", _freeze(model), mode, _freeze(model_kwargs), _freeze(config))
    return shared(key, lambda: EgtLM(model, mode=mode, **model_kwargs, **config))


class LazyLM:
    """Builds (or is handed) an `EgtLM` on first `get()`; thread-safe, cheap to create."""

    def __init__(
        self,
        model: EgtLM | str | os.PathLike | None = None,
        *,
        mode: str = "unified",
        model_kwargs: Mapping[str, Any] | None = None,
        config: Mapping[str, Any] | None = None,
    ) -> None:
        if isinstance(model, EgtLM):
            if model_kwargs or config:
                raise ValueError(
                    "model is an EgtLM instance, so model_kwargs and the EgtLM settings cannot apply; "
                    "construct the EgtLM with them or pass a path instead."
                )
            self._lm: EgtLM | None = model
        else:
            self._lm = None
        self._args = (model, mode, dict(model_kwargs or {}), dict(config or {}))
        self._lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        return self._lm is not None

    def matches(
        self,
        model: Any,
        *,
        mode: str = "unified",
        model_kwargs: Mapping[str, Any] | None = None,
        config: Mapping[str, Any] | None = None,
    ) -> bool:
        """Whether this holder was made for these settings (adapters re-check after field changes)."""
        old_model, old_mode, old_kwargs, old_config = self._args
        return (old_model is model or (not isinstance(model, EgtLM) and old_model == model)) and (
            old_mode,
            old_kwargs,
            old_config,
        ) == (mode, dict(model_kwargs or {}), dict(config or {}))

    def get(self) -> EgtLM:
        lm = self._lm
        if lm is not None:
            return lm
        with self._lock:
            if self._lm is None:
                model, mode, model_kwargs, config = self._args
                assert not isinstance(model, EgtLM)  # an instance is kept as self._lm from the start
                self._lm = shared_lm(model, mode=mode, model_kwargs=model_kwargs, config=config)
            return self._lm


def display_name(model: EgtLM | str | os.PathLike | None) -> str:
    """A readable model name for metadata and tracing, without loading anything."""
    if model is None:
        return DEFAULT_MODEL_NAME
    if isinstance(model, EgtLM):
        source = model.source
        if source.kind == "default":
            return DEFAULT_MODEL_NAME
        if source.kind == "peft" and source.base is not None and source.base.kind == "default":
            return f"{DEFAULT_MODEL_NAME}+{Path(source.path).name}"  # e.g. the packaged trained adapter
        if source.kind == "hub":
            return source.path
        return source.gguf_file or Path(source.path).name
    return os.fspath(model)
