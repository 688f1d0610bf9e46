"""`ServerState`: the one `EgtLM` a server holds, loaded in the background, and what it serves with.

The model loads in a thread after the server starts listening, so `/health` answers 503 while it
loads (orchestrators wait for 200) and every other route says the model is loading. It is built
with `shared_lm`, the registry every adapter uses: an app that runs the server in-process and an
adapter in the same process share one copy of the weights and one shared-cache engine.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import numpy as np

from ..generation.limit import set_generation_limit
from ..model import EgtLM
from ..shared import display_name, shared_lm
from .batching import EmbeddingBatcher
from .errors import APIError
from .metrics import Metrics
from .settings import ServerSettings

logger = logging.getLogger(__name__)


def load_server_model(settings: ServerSettings) -> EgtLM:
    """The model a server with `settings` holds: the process-wide one for its settings, with states and
    documents in the settings' Redis when one is given (what replicas share)."""
    kwargs = dict(settings.model_kwargs)
    if settings.redis_url is not None:
        from ..scale.redis_backing import redis_backing

        kwargs.update(redis_backing(settings.redis_url, settings.model, kwargs.get("weights", "native")))
    return shared_lm(settings.model, model_kwargs=kwargs)


class ServerState:
    """The model (once loaded), the embedding batcher, the metrics and the accepted model ids."""

    def __init__(self, settings: ServerSettings, lm: EgtLM | None = None) -> None:
        self.settings = settings
        self.metrics = Metrics(settings.metrics)
        self.created = int(time.time())
        self.served_name = settings.served_name or display_name(lm if lm is not None else settings.model)
        self.names = (self.served_name, *[a for a in settings.aliases if a != self.served_name])
        self._lm = lm
        self.load_error: BaseException | None = None
        self.ready = threading.Event()
        self.batcher = EmbeddingBatcher(
            self._embed, settings.max_batch, settings.max_wait_ms / 1000, self.metrics.embedding_batch
        )

    # --- loading ----------------------------------------------------------------------------------
    def start_loading(self) -> threading.Thread:
        thread = threading.Thread(target=self._load, name="egtlm-load", daemon=True)
        thread.start()
        return thread

    def _load(self) -> None:
        try:
            started = time.perf_counter()
            if self._lm is None:
                self._lm = load_server_model(self.settings)
            if self.settings.generation_limit is not None:
                set_generation_limit(self.settings.generation_limit, self._lm.device.type)
            if self.settings.metrics:
                self.metrics.watch_store(self._lm.document_cache.stored_bytes)
            logger.info("Serving %s (%.1f s to load)", self._lm, time.perf_counter() - started)
        except BaseException as err:  # reported by /health and every route
            logger.exception("The model failed to load")
            self.load_error = err
        finally:
            self.ready.set()

    @property
    def lm(self) -> EgtLM:
        """The model, or a 503 while it loads (or when loading failed)."""
        if self.load_error is not None:
            raise APIError(503, f"The model failed to load: {self.load_error}", code="model_load_failed")
        if not self.ready.is_set() or self._lm is None:
            raise APIError(
                503, "The model is still loading; retry when GET /health answers 200.", code="loading"
            )
        return self._lm

    def check_model(self, name: Any) -> None:
        """A request's `model` must be one this server serves (a typo is not silently served)."""
        if name not in self.names:
            raise APIError(
                404,
                f"The model {name!r} does not exist on this server; it serves {list(self.names)}.",
                param="model",
                code="model_not_found",
            )

    # --- embedding (the batcher's one thread) ------------------------------------------------------
    def _embed(self, texts: list[str], input_type: str, dim: int | None) -> tuple[np.ndarray, list[int]]:
        lm = self.lm
        role = "query" if input_type == "query" else "document"  # a text's vector is `EgtLM.encode`'s
        vectors = lm.encode(texts, prompt_name=role, dim=dim)
        tokens = [len(ids) for ids in lm.tokenizer(texts, add_special_tokens=True)["input_ids"]]
        return np.asarray(vectors, dtype=np.float32), tokens
