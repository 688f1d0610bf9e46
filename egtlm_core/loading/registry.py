"""The one registry: weakly held, process-wide objects built once per key, even under threads.

Two kinds of entries live here. `get_model` keys a `LoadedModel` by (source, dtype, device, kernel):
every `EgtLM` asking for the same weights shares them, so an app with an embedder and a chat model
never holds the weights twice. `shared.shared_lm` keys whole `EgtLM` objects by their settings, for
framework adapters that are constructed often and must share one RAG engine. Entries are weakly
held: weights are freed once nothing uses them. `model_state` attaches one typed object per kind to
a `LoadedModel` (what every RAG engine on those weights shares).
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch

from ..modeling.int8_weights import check_weights, quantize_linears, weights_fingerprint
from .loader import load_model_and_tokenizer
from .sources import ModelSource

logger = logging.getLogger(__name__)


@dataclass(eq=False)
class LoadedModel:
    """Weights and tokenizer shared by every `EgtLM` of one (source, dtype, device).

    `model` is the causal LM when any user needed generation, else the bare transformer. An
    embedding-only entry is upgraded in place when a generating user arrives, so existing users see
    the one copy too.
    """

    source: ModelSource
    model: Any
    tokenizer: Any
    dtype: torch.dtype
    device: torch.device
    attn_implementation: str | None
    has_lm_head: bool
    weights: str = "native"  # "int8": every linear layer weight-only int8 (`modeling.int8_weights`)
    lock: threading.RLock = field(default_factory=threading.RLock)
    # What every user of these weights shares, one object per type (`model_state`): e.g. the RAG
    # engines' known documents and default KV store.
    states: dict[type, Any] = field(default_factory=dict, repr=False)

    @property
    def body(self) -> Any:
        """The transformer without the LM head (what embedding runs)."""
        return self.model.base_model if self.has_lm_head else self.model

    def fingerprint(self) -> str:
        """The weights as they compute: the source's fingerprint, marked when quantized at load, so
        states and vectors of int8 weights never share cache entries with the native ones."""
        return weights_fingerprint(self.source.fingerprint(), self.weights)

    def __hash__(self) -> int:
        return id(self)


_entries: weakref.WeakValueDictionary[tuple, Any] = weakref.WeakValueDictionary()
_key_locks: dict[tuple, threading.Lock] = {}
_registry_lock = threading.Lock()
T = TypeVar("T")


def _key_lock(key: tuple) -> threading.Lock:
    with _registry_lock:
        return _key_locks.setdefault(key, threading.Lock())


def shared(key: tuple, build: Callable[[], T]) -> T:
    """The live entry for `key`, or `build()`'s result registered under it (built once per key)."""
    with _key_lock(key):
        entry = _entries.get(key)
        if entry is None:
            entry = build()
            _entries[key] = entry
        return entry


def model_state(loaded: LoadedModel, kind: type[T]) -> T:
    """The one `kind()` every user of `loaded` shares, built on first request (kept with the weights).

    Engines built separately on the same weights (an embedder, a retriever and a chat model of a
    framework) find each other's state here: one typed object per kind, no string keys.
    """
    with loaded.lock:
        state = loaded.states.get(kind)
        if state is None:
            state = loaded.states[kind] = kind()
        return state  # type: ignore[no-any-return]


def get_model(
    source: ModelSource,
    *,
    with_lm_head: bool,
    dtype: torch.dtype,
    device: torch.device,
    attn_implementation: str | None = None,
    trust_remote_code: bool = False,
    share: bool = True,
    weights: str = "native",
) -> LoadedModel:
    """The shared `LoadedModel` for these settings, loading it (once, even under threads) if needed.

    `share=False` loads a private copy that is never registered: for code that changes the weights
    in place (training injects LoRA and steps the optimiser), which must not reach other users."""

    check_weights(weights)

    def load() -> tuple[Any, Any]:
        logger.info("Loading %s (%s, %s, lm_head=%s)", source.cache_id(), dtype, device, with_lm_head)
        model, tokenizer = load_model_and_tokenizer(
            source,
            with_lm_head=with_lm_head,
            dtype=dtype,
            device=device,
            attn_implementation=attn_implementation,
            trust_remote_code=trust_remote_code,
        )
        if weights == "int8":
            quantize_linears(model)
        return model, tokenizer

    if not share:
        return LoadedModel(source, *load(), dtype, device, attn_implementation, with_lm_head, weights)
    key: tuple = ("LoadedModel", source.cache_id(), str(dtype), str(device), attn_implementation)
    key += (trust_remote_code, weights)
    with _key_lock(key):
        entry = _entries.get(key)
        if entry is not None and (entry.has_lm_head or not with_lm_head):
            return entry
        model, tokenizer = load()
        if entry is not None:  # upgrade an embedding-only entry in place: one copy of the weights
            with entry.lock:
                entry.model, entry.tokenizer, entry.has_lm_head = model, tokenizer, True
            return entry
        entry = LoadedModel(
            source, model, tokenizer, dtype, device, attn_implementation, with_lm_head, weights
        )
        _entries[key] = entry
        return entry


def loaded_models() -> list[LoadedModel]:
    """The models currently held in this process (for `egtlm info` and tests)."""
    with _registry_lock:
        return [e for e in _entries.values() if isinstance(e, LoadedModel)]
