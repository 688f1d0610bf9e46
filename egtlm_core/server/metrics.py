"""Prometheus metrics of one server (opt-in: `egtlm serve --metrics`), in a registry of its own.

Requests by route and status, tokens by kind, time queued for the generation slot or the embedding
batch, time to first token, embedding batch sizes, what the shared cache did (segments hit,
spliced approximately, missed) and the bytes the KV store holds. Without `--metrics` every call
here does nothing, so handlers need no checks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class Metrics:
    """The server's counters; `enabled=False` makes every method a no-op."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        if not enabled:
            return
        try:
            from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
        except ImportError as err:
            raise ImportError(
                "egtlm serve --metrics needs prometheus-client: pip install 'egtlm[server]'"
            ) from err
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("egtlm_requests", "Requests served", ["route", "status"], registry=r)
        self.tokens = Counter("egtlm_tokens", "Tokens processed", ["kind"], registry=r)
        seconds = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
        self.queue = Histogram("egtlm_queue_seconds", "Time queued", ["kind"], buckets=seconds, registry=r)
        self.ttft = Histogram(
            "egtlm_ttft_seconds", "Time to first token", ["route"], buckets=seconds, registry=r
        )
        self.batch = Histogram(
            "egtlm_embedding_batch_texts",
            "Texts per embedding forward call",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
            registry=r,
        )
        self.cache = Counter("egtlm_cache_segments", "Shared-cache segments", ["outcome"], registry=r)
        self.store_bytes = Gauge("egtlm_kv_store_bytes", "Bytes the KV store holds", registry=r)

    def request(self, route: str, status: int) -> None:
        if self.enabled:
            self.requests.labels(route, str(status)).inc()

    def count_tokens(self, kind: str, n: int) -> None:
        if self.enabled and n:
            self.tokens.labels(kind).inc(n)

    def queued(self, kind: str, seconds: float) -> None:
        if self.enabled:
            self.queue.labels(kind).observe(max(seconds, 0.0))

    def embedding_batch(self, requests: int, texts: int, seconds: float) -> None:
        if self.enabled:
            self.batch.observe(texts)

    def generation(self, route: str, result: Any) -> None:
        """Tokens, queue time, TTFT and cache outcome of one finished generation."""
        if not self.enabled or result is None:
            return
        self.count_tokens("prompt", result.prompt_tokens)
        self.count_tokens("completion", result.completion_tokens)
        self.count_tokens("cached", int(getattr(result, "reused_tokens", 0)))
        self.queued("generation", result.queue_s)
        if result.ttft_s is not None:
            self.ttft.labels(route).observe(result.ttft_s)
        stats = getattr(result, "reuse", None)
        if stats is not None:
            exact_hits = max(stats.hits - stats.approximate_hits, 0)
            for outcome, n in (
                ("hit", exact_hits),
                ("approximate", stats.approximate_hits),
                ("miss", stats.misses),
            ):
                if n:
                    self.cache.labels(outcome).inc(n)

    def watch_store(self, stored_bytes: Callable[[], int]) -> None:
        """Report the KV store's bytes (`DocumentCache.stored_bytes`) at every scrape."""
        if self.enabled:
            self.store_bytes.set_function(lambda: float(stored_bytes()))

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST
