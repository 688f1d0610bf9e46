"""`EgtLMEmbeddingFunction`: a Chroma embedding function over `EgtLM.encode_documents` / `encode_queries`.

Registered under the name "egtlm": a collection stores `get_config()` with its configuration, and
any process that has imported `chromadb_egtlm` rebuilds the same function (same model, same
settings) when it opens the collection without passing one.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping
from typing import Any

try:
    from chromadb.api.types import Documents, EmbeddingFunction, Embeddings, Space
    from chromadb.utils.embedding_functions import register_embedding_function
except ImportError as err:  # pragma: no cover - the extra is missing
    raise ImportError("chromadb_egtlm needs chromadb: pip install 'egtlm[chroma]'") from err

from egtlm_core import EgtLM, EgtLMConfig
from egtlm_core.adapter_kit import LazyLM

# Settings that change what a text embeds to (the core's one list, `EgtLMConfig.VECTOR_FIELDS`): a
# persisted collection must rebuild them unchanged, and a config update may not change them.
EMBEDDING_SETTINGS = EgtLMConfig.VECTOR_FIELDS
_CONFIG_KEYS = ("model", "mode", "model_kwargs", "batch_size", "dimensions", *EMBEDDING_SETTINGS)
_MODES = ("unified", "embedding")
_PRIMITIVES = (str, int, float, bool, type(None))


@register_embedding_function
class EgtLMEmbeddingFunction(EmbeddingFunction[Documents]):
    """Chroma embeddings from one decoder model that also generates (shared with the other adapters).

    Construction is cheap: the weights load on the first call, through egtlm's shared registry, so a
    LangChain or LlamaIndex chat model on the same model uses the same copy.

    Example:
        >>> import chromadb
        >>> from chromadb_egtlm import EgtLMEmbeddingFunction
        >>> client = chromadb.PersistentClient(path="db")
        >>> docs = client.get_or_create_collection("docs", embedding_function=EgtLMEmbeddingFunction())
        >>> docs.add(ids=["1"], documents=["Paris is the capital of France."])
        >>> docs.query(query_texts=["capital of France?"], n_results=1)["ids"]
        [['1']]

    Args:
        model: a local path or hub id, None for the packaged default model, or an `EgtLM` (its
            settings and source are what `get_config` records).
        mode: "unified" (the default: a chat model on the same weights shares them) or "embedding"
            (no LM head); an `EgtLM` keeps its own.
        model_kwargs: loading arguments for `EgtLM` (torch_dtype, device, ...); JSON values only,
            since they are persisted with the collection.
        batch_size: texts per forward pass (None: the model's default).
        dimensions: keep the first `dimensions` components (Matryoshka, re-normalised).
        **settings: `EgtLMConfig` settings that decide the vectors, `EgtLMConfig.VECTOR_FIELDS`
            (pooling, attention, query_instruction, document_instruction, prompt_format,
            document_context, max_length, ...).
    """

    def __init__(
        self,
        model: EgtLM | str | os.PathLike | None = None,
        *,
        mode: str | None = None,
        model_kwargs: Mapping[str, Any] | None = None,
        batch_size: int | None = None,
        dimensions: int | None = None,
        **settings: Any,
    ) -> None:
        if isinstance(model, EgtLM):
            if settings or model_kwargs or mode not in (None, model.config.mode):
                raise ValueError("model is an EgtLM instance; set its settings on that EgtLM instead.")
            settings = {name: getattr(model.config, name) for name in EMBEDDING_SETTINGS}
            self.model: str | None = _source_name(model)
            mode = model.config.mode
        else:
            self.model = None if model is None else os.fspath(model)
        self.mode = mode = mode or "unified"
        self.model_kwargs = dict(model_kwargs or {})
        self.batch_size, self.dimensions = batch_size, dimensions
        self.settings = dict(settings)
        self.validate_config(self.get_config())
        if isinstance(model, EgtLM):
            self._lazy = LazyLM(model)
        else:
            self._lazy = _held_model(self.model, mode, self.model_kwargs, self.settings)

    @property
    def client(self) -> EgtLM:
        """The `EgtLM` doing the work (loaded on first use)."""
        return self._lazy.get()

    def _encode_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"dim": self.dimensions}
        if self.batch_size is not None:
            kwargs["batch_size"] = self.batch_size
        return kwargs

    def __call__(self, input: Documents) -> Embeddings:
        """Embed documents with the document instruction."""
        return list(self.client.encode_documents(_texts(input), **self._encode_kwargs()))

    def embed_query(self, input: Documents) -> Embeddings:
        """Embed queries with the query instruction (Chroma calls this for `query_texts`)."""
        return list(self.client.encode_queries(_texts(input), **self._encode_kwargs()))

    @staticmethod
    def name() -> str:
        return "egtlm"

    def default_space(self) -> Space:
        return "cosine"  # vectors are L2-normalised by default, where cosine, ip and l2 rank alike

    def supported_spaces(self) -> list[Space]:
        return ["cosine", "ip", "l2"]

    def get_config(self) -> dict[str, Any]:
        """What a persisted collection stores to rebuild this function (JSON values only)."""
        return {
            "model": self.model,
            "mode": self.mode,
            "model_kwargs": dict(self.model_kwargs),
            "batch_size": self.batch_size,
            "dimensions": self.dimensions,
            **self.settings,
        }

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> EgtLMEmbeddingFunction:
        """The function a collection's stored config describes (Chroma calls this on open)."""
        EgtLMEmbeddingFunction.validate_config(config)
        return EgtLMEmbeddingFunction(**config)

    @staticmethod
    def validate_config(config: dict[str, Any]) -> None:
        """Reject configs that would not rebuild the same function; messages name the bad key."""
        unknown = set(config) - set(_CONFIG_KEYS)
        if unknown:
            raise ValueError(
                f"Unknown egtlm embedding config keys {sorted(unknown)}; expected {_CONFIG_KEYS}."
            )
        if config.get("mode", "unified") not in _MODES:
            raise ValueError(f"Unknown mode {config['mode']!r}; expected one of {_MODES}.")
        if not isinstance(config.get("model"), (str, type(None))):
            raise ValueError(f"model must be a path, a hub id or None, got {config['model']!r}.")
        for key in ("batch_size", "dimensions"):
            value = config.get(key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{key} must be a positive integer or None, got {value!r}.")
        model_kwargs = config.get("model_kwargs") or {}
        bad = [k for k, v in dict(model_kwargs).items() if not isinstance(v, _PRIMITIVES)]
        if bad:
            raise ValueError(f"model_kwargs {bad} are not JSON values; a collection cannot persist them.")
        settings = {k: v for k, v in config.items() if k in EMBEDDING_SETTINGS}
        EgtLMConfig.from_kwargs({"mode": config.get("mode", "unified"), **settings})

    def validate_config_update(self, old_config: dict[str, Any], new_config: dict[str, Any]) -> None:
        """Refuse changes that alter the vectors of an existing collection (batch size may change)."""
        fixed = ("model", "dimensions", *EMBEDDING_SETTINGS)
        changed = [k for k in fixed if old_config.get(k) != new_config.get(k)]
        if changed:
            raise ValueError(
                f"Changing {changed} would make new vectors incomparable with the stored ones; "
                "create a new collection and re-embed the documents instead."
            )

    def __repr__(self) -> str:
        return f"EgtLMEmbeddingFunction(model={self.model!r}, mode={self.mode!r}, {self.settings})"


# Chroma builds a new function from the stored config on every add and query of a reopened
# collection; egtlm's registry holds models weakly, so without a strong reference here each call
# would load the weights again (measured: ~1-2 s per query). Chroma's own sentence-transformers
# function keeps its models in a class dict for the same reason. Models stay for the process's life.
_HELD: dict[str, LazyLM] = {}
_HELD_LOCK = threading.Lock()


def _held_model(
    model: str | None, mode: str, model_kwargs: dict[str, Any], settings: dict[str, Any]
) -> LazyLM:
    """One lazy holder per (model, mode, loading arguments, settings), kept for the process."""
    key = json.dumps([model, mode, model_kwargs, settings], sort_keys=True, default=str)
    with _HELD_LOCK:
        if key not in _HELD:
            _HELD[key] = LazyLM(model, mode=mode, model_kwargs=model_kwargs, config=settings)
        return _HELD[key]


def _source_name(lm: EgtLM) -> str | None:
    """How a config names an `EgtLM`'s weights: None for the packaged default (portable)."""
    source = lm.source
    if source.kind == "default":
        return None
    if source.kind == "gguf":
        return os.path.join(source.path, source.gguf_file or "")
    return source.path


def _texts(input: Documents) -> list[str]:
    if isinstance(input, str):
        return [input]  # Chroma normalises one string to a list; be as forgiving when called directly
    return list(input)
