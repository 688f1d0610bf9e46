"""`EgtLMEmbedding`: a LlamaIndex `BaseEmbedding` over `EgtLM.encode_queries` / `encode_documents`."""

from __future__ import annotations

import asyncio
from typing import Any, Literal

try:
    from llama_index.core.base.embeddings.base import BaseEmbedding, Embedding
    from llama_index.core.bridge.pydantic import Field, PrivateAttr, model_validator
except ImportError as err:  # pragma: no cover - the extra is missing
    raise ImportError(
        "llama_index.embeddings.egtlm needs llama-index-core: pip install 'egtlm[llamaindex]'"
    ) from err

from egtlm_core import EgtLM, EgtLMConfig
from egtlm_core.adapter_kit import LazyLM, display_name

# Texts per `_get_text_embeddings` call. LlamaIndex's default of 10 makes many tiny forwards; the core
# batches by padded tokens itself (1,024 per forward on CPU), so hand it enough texts to fill them.
DEFAULT_EMBED_BATCH_SIZE = 256

# The settings that decide the vectors (`EgtLMConfig.VECTOR_FIELDS`), each a field of `EgtLMEmbedding`
# handed to the model's config. LlamaIndex calls documents "text", so document_instruction is the
# field text_instruction; max_length is left out of the config because it is applied per encode call
# (`_kwargs`), so embedders that differ only in it share one `EgtLM`.
_FIELD_NAMES = {"document_instruction": "text_instruction"}
_CONFIG_FIELDS = tuple(name for name in EgtLMConfig.VECTOR_FIELDS if name != "max_length")


class EgtLMEmbedding(BaseEmbedding):
    """Embeddings from the decoder model that also answers (share it with `EgtLMLLM`).

    Construction is cheap; the weights load on the first embed call through the process-wide
    registry that `EgtLMLLM` uses too, so an app holds one copy of the model. Instructions left at
    None use the model's configured query / document instructions (`EgtLMConfig`).

    Example:
        >>> from llama_index.embeddings.egtlm import EgtLMEmbedding
        >>> emb = EgtLMEmbedding()  # the packaged SmolLM2-135M-Instruct, offline
        >>> len(emb.get_query_embedding("What is the capital of France?"))
        576
    """

    model: Any = Field(default=None, description="Path, hub id, EgtLM instance, or None (packaged default).")
    mode: Literal["unified", "embedding"] = Field(
        default="unified", description="'unified' keeps the LM head so EgtLMLLM shares these weights."
    )
    query_instruction: str | None = Field(default=None, description="Instruction before queries.")
    text_instruction: str | None = Field(default=None, description="Instruction before documents.")
    pooling: str | None = Field(default=None, description="mean, weightedmean, last or cls.")
    attention: str | None = Field(default=None, description="causal or bidirectional.")
    normalize: bool | None = Field(default=None, description="L2-normalise the vectors (default True).")
    embed_eos: str | None = Field(
        default=None, description="Text appended to every text ('' for none; default: EOS for e5 + last)."
    )
    prompt_format: str | None = Field(default=None, description="egtlm, gritlm, e5, none or custom.")
    prompt_template: str | None = Field(
        default=None, description="Template for prompt_format='custom', with '{instruction}'."
    )
    document_context: str | None = Field(
        default=None, description="Documents after their instruction ('instruction') or the RAG head ('rag')."
    )
    dimensions: int | None = Field(default=None, ge=1, description="Matryoshka truncation (re-normalised).")
    max_length: int | None = Field(default=None, ge=2, description="Token limit per text.")
    model_kwargs: dict[str, Any] = Field(default_factory=dict, description="EgtLM loading arguments.")
    show_progress: bool = Field(default=False, description="Progress bar inside each batch call.")
    embed_batch_size: int = Field(default=DEFAULT_EMBED_BATCH_SIZE, gt=0, le=4096)

    _lazy: LazyLM = PrivateAttr()

    def __init__(self, model: Any = None, **kwargs: Any) -> None:
        if "model_name" not in kwargs:
            kwargs["model_name"] = display_name(model)
        super().__init__(**{**kwargs, "model": model})

    def _config(self) -> dict[str, Any]:
        values = {name: getattr(self, _FIELD_NAMES.get(name, name)) for name in _CONFIG_FIELDS}
        return {name: value for name, value in values.items() if value is not None}

    @model_validator(mode="after")
    def _build_client(self) -> EgtLMEmbedding:
        config = self._config()
        if isinstance(self.model, EgtLM):
            if config or self.model_kwargs or self.mode != "unified":
                raise ValueError("model is an EgtLM instance; set instructions etc. on that EgtLM instead.")
        else:
            EgtLMConfig.from_kwargs({"mode": self.mode, **config})  # bad settings fail here
        self._lazy = LazyLM(self.model, mode=self.mode, model_kwargs=self.model_kwargs, config=config)
        return self

    @classmethod
    def class_name(cls) -> str:
        return "EgtLMEmbedding"

    @property
    def client(self) -> EgtLM:
        """The `EgtLM` doing the work (loaded on first access)."""
        return self._lazy.get()

    def _kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"show_progress_bar": self.show_progress}
        if self.dimensions is not None:
            kwargs["dim"] = self.dimensions
        if self.max_length is not None:
            kwargs["max_length"] = self.max_length
        return kwargs

    # --- BaseEmbedding ----------------------------------------------------------------------------
    def _get_query_embedding(self, query: str) -> Embedding:
        return self.client.encode_queries(query, **self._kwargs()).tolist()

    def _get_text_embedding(self, text: str) -> Embedding:
        return self.client.encode_documents(text, **self._kwargs()).tolist()

    def _get_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        """One core call per LlamaIndex batch: the core groups texts into padded-token batches."""
        if not texts:
            return []
        return self.client.encode_documents(list(texts), **self._kwargs()).tolist()

    async def _aget_query_embedding(self, query: str) -> Embedding:
        return await asyncio.to_thread(self._get_query_embedding, query)

    async def _aget_text_embedding(self, text: str) -> Embedding:
        return await asyncio.to_thread(self._get_text_embedding, text)

    async def _aget_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return await asyncio.to_thread(self._get_text_embeddings, texts)
