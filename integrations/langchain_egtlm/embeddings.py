"""`EgtLMEmbeddings`: LangChain `Embeddings` over `EgtLM.encode_queries` / `encode_documents`."""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

try:
    from langchain_core.embeddings import Embeddings
except ImportError as err:  # pragma: no cover - the extra is missing
    raise ImportError("langchain_egtlm needs langchain-core: pip install 'egtlm[langchain]'") from err

from egtlm_core import EgtLM, EgtLMConfig
from egtlm_core.adapter_kit import LazyLM

# The settings that decide the vectors (`EgtLMConfig.VECTOR_FIELDS`), each a field of
# `EgtLMEmbeddings` handed to the model's config; max_length is left out of the config because it is
# applied per encode call (`_encode_kwargs`), so embedders that differ only in it share one `EgtLM`.
_CONFIG_FIELDS = tuple(name for name in EgtLMConfig.VECTOR_FIELDS if name != "max_length")


class EgtLMEmbeddings(BaseModel, Embeddings):
    """Embeddings from one decoder model that also generates (share it with `ChatEgtLM`).

    Construction is cheap: the weights load on the first embed call, through a registry shared with
    `ChatEgtLM` and `EgtLMCacheRetriever`, so an app holds one copy of the model. Settings left at
    None use the model's defaults (`EgtLMConfig`).

    Example:
        >>> from langchain_egtlm import EgtLMEmbeddings
        >>> emb = EgtLMEmbeddings()  # the packaged SmolLM2-135M-Instruct, offline
        >>> len(emb.embed_query("What is the capital of France?"))
        576
        >>> emb.embed_documents(["Paris is the capital of France."])[0][:2]
    """

    model_config = ConfigDict(extra="forbid", protected_namespaces=(), arbitrary_types_allowed=True)

    model: Any = None
    """A local path, `.gguf` file, hub id, an `EgtLM` instance, or None for the packaged default."""
    mode: Literal["unified", "embedding"] = "unified"
    """"unified" loads the LM head too, so a `ChatEgtLM` on the same model reuses these weights;
    "embedding" loads the bare transformer (less memory when nothing here generates)."""
    pooling: str | None = None
    """How token states become one vector: "mean", "weightedmean", "last", "cls" (None: model default)."""
    attention: str | None = None
    """Attention during embedding: "causal" or "bidirectional" (GRIT-trained models)."""
    query_instruction: str | None = None
    """Task instruction put before queries (`embed_query`)."""
    document_instruction: str | None = None
    """Task instruction put before documents (`embed_documents`); none by default."""
    prompt_format: str | None = None
    """How instructions are wrapped: "egtlm", "gritlm", "e5", "none" or "custom"."""
    prompt_template: str | None = None
    """The template for prompt_format="custom"; must contain "{instruction}"."""
    embed_eos: str | None = None
    """A string appended to every embedded text ("": nothing; None: model default, the EOS only for
    e5 prompts with last pooling)."""
    document_context: str | None = None
    """What documents are embedded after: "instruction" (the document instruction) or "rag" (the RAG
    prompt head their KV states are captured after; None: model default)."""
    batch_size: int | None = Field(default=None, ge=1)
    """Texts per forward pass (None: model default, 32)."""
    normalize: bool | None = None
    """L2-normalise the vectors (None: model default, True)."""
    dimensions: int | None = Field(default=None, ge=1)
    """Keep only the first `dimensions` components (Matryoshka truncation, re-normalised)."""
    show_progress: bool = False
    """Show a progress bar while embedding."""
    max_length: int | None = Field(default=None, ge=2)
    """Token limit per text; longer texts are truncated with a warning (None: model default, 512)."""
    model_kwargs: dict[str, Any] = Field(default_factory=dict)
    """Loading arguments passed to `EgtLM` (torch_dtype, device, attn_implementation, cache_store...)."""
    encode_kwargs: dict[str, Any] = Field(default_factory=dict)
    """Extra arguments for every `EgtLM.encode_*` call."""

    _lazy: LazyLM = PrivateAttr()

    def _config(self) -> dict[str, Any]:
        values = {name: getattr(self, name) for name in _CONFIG_FIELDS}
        return {name: value for name, value in values.items() if value is not None}

    @model_validator(mode="after")
    def _build_client(self) -> EgtLMEmbeddings:
        config = self._config()
        if not isinstance(self.model, EgtLM):
            EgtLMConfig.from_kwargs({"mode": self.mode, **config})  # bad settings fail here, not at first use
        elif config or self.mode != "unified":
            raise ValueError(
                "model is an EgtLM instance; set pooling, instructions etc. on that EgtLM instead."
            )
        self._lazy = LazyLM(self.model, mode=self.mode, model_kwargs=self.model_kwargs, config=config)
        return self

    @property
    def client(self) -> EgtLM:
        """The `EgtLM` doing the work (loaded on first access; rebuilt if the fields changed)."""
        settings: dict[str, Any] = dict(mode=self.mode, model_kwargs=self.model_kwargs, config=self._config())
        if not self._lazy.matches(self.model, **settings):
            self._lazy = LazyLM(self.model, **settings)
        return self._lazy.get()

    def _encode_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"show_progress_bar": self.show_progress}
        if self.batch_size is not None:
            kwargs["batch_size"] = self.batch_size
        if self.max_length is not None:
            kwargs["max_length"] = self.max_length
        if self.dimensions is not None:
            kwargs["dim"] = self.dimensions
        return {**kwargs, **self.encode_kwargs}

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Embed documents with the document instruction; one list of floats per text."""
        if isinstance(texts, str):
            raise TypeError("embed_documents takes a list of strings; use embed_query for one text.")
        texts = list(texts)
        if not texts:
            return []
        return self.client.encode_documents(texts, **self._encode_kwargs()).tolist()

    def embed_query(self, text: str) -> list[float]:
        """Embed a query with the query instruction."""
        if not isinstance(text, str):
            raise TypeError(f"embed_query takes a string, got {type(text).__name__}.")
        return self.client.encode_queries(text, **self._encode_kwargs()).tolist()

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        """`embed_documents` in a worker thread, so the event loop keeps running."""
        return await asyncio.to_thread(self.embed_documents, texts)

    async def aembed_query(self, text: str) -> list[float]:
        """`embed_query` in a worker thread, so the event loop keeps running."""
        return await asyncio.to_thread(self.embed_query, text)
