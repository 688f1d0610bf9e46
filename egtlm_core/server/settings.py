"""`ServerSettings`: what one `egtlm serve` process runs with, validated where it is built."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..cache.redis_tier import check_redis_url

API_KEY_ENV = "EGTLM_API_KEY"


@dataclass(frozen=True)
class ServerSettings:
    """Settings of one server; every limit is a clear 400/413 for a request that passes it.

    Attributes:
        model: what `egtlm serve MODEL` loads (None: the packaged default).
        model_kwargs: `EgtLM` loading arguments (torch_dtype, device, ...).
        served_name: the model id clients send and `/v1/models` lists (default: the display name).
        aliases: more model ids accepted as this model (e.g. "text-embedding-3-small" for a client
            that cannot change its default).
        api_key: bearer key every route but `/health` requires (None: open; env EGTLM_API_KEY).
        metrics: serve Prometheus metrics at `/metrics`.
        max_batch: most texts in one micro-batched embedding forward call.
        max_wait_ms: how long the first request of a batch waits for others to join it.
        max_request_bytes: largest request body (413 above).
        max_input_items: most texts in one embeddings request (OpenAI's limit: 2048).
        max_input_chars: longest single text (embeddings, documents, queries) in characters.
        max_tokens: largest max_tokens a request may ask for.
        default_max_tokens: max_tokens when a chat request gives none.
        generation_limit: concurrent generations (None: the core's default, one on CPU).
        redis_url: keep document KV states and the document index in this Redis as well
            (`redis://host:port/db`), so every server on it (replicas) finds and reuses what any
            one of them indexed; None keeps both in this process (and states on local disk).
    """

    model: str | None = None
    model_kwargs: Mapping[str, Any] = field(default_factory=dict)
    served_name: str | None = None
    aliases: tuple[str, ...] = ()
    api_key: str | None = None
    metrics: bool = False
    max_batch: int = 32
    max_wait_ms: float = 5.0
    max_request_bytes: int = 4 << 20
    max_input_items: int = 2048
    max_input_chars: int = 20_000
    max_tokens: int = 4096
    default_max_tokens: int = 256
    generation_limit: int | None = None
    redis_url: str | None = None

    def __post_init__(self) -> None:
        for name in ("max_batch", "max_request_bytes", "max_input_items", "max_input_chars", "max_tokens"):
            _positive(name, getattr(self, name))
        _positive("default_max_tokens", self.default_max_tokens)
        if self.generation_limit is not None:
            _positive("generation_limit", self.generation_limit)
        if isinstance(self.max_wait_ms, bool) or not isinstance(self.max_wait_ms, (int, float)):
            raise TypeError(f"max_wait_ms must be a number, got {self.max_wait_ms!r}.")
        if self.max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be ≥ 0, got {self.max_wait_ms!r}.")
        if self.default_max_tokens > self.max_tokens:
            raise ValueError(
                f"default_max_tokens={self.default_max_tokens} is above max_tokens={self.max_tokens}."
            )
        if self.redis_url is not None:
            check_redis_url(self.redis_url)
        if self.api_key is not None and not self.api_key.strip():
            raise ValueError("api_key is empty; leave it unset for an open server.")

    @classmethod
    def from_env(cls, **values: Any) -> ServerSettings:
        """Settings with the API key taken from EGTLM_API_KEY when not given."""
        if values.get("api_key") is None and os.environ.get(API_KEY_ENV, "").strip():
            values["api_key"] = os.environ[API_KEY_ENV].strip()
        return cls(**values)


def _positive(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")
