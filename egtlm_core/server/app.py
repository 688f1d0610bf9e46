"""`create_app`: the FastAPI app of one server, holding one `EgtLM` and its shared cache."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI

from .. import __version__
from ..model import EgtLM
from . import errors
from .middleware import CountRequests, Guard, NameProcess
from .routes import chat, documents, embeddings, meta
from .settings import ServerSettings
from .state import ServerState

DESCRIPTION = """One decoder model that embeds and generates, behind OpenAI's API.

`/v1/embeddings`, `/v1/chat/completions` and `/v1/models` follow OpenAI's API. The `egtlm` routes
(`/v1/documents`, `/v1/retrieve`, `/v1/answer`) are this server's own: documents indexed there keep
their KV states, which chat and answers reuse. See docs/guide_server.md."""


def create_app(settings: ServerSettings | None = None, lm: EgtLM | None = None) -> FastAPI:
    """The server app; the model (`lm`, or `settings.model` loaded in the background) is held in
    `app.state.egtlm`.

    Example:
        >>> import uvicorn
        >>> uvicorn.run(create_app(ServerSettings(api_key="secret")), host="127.0.0.1", port=8000)
    """
    settings = settings or ServerSettings.from_env()
    state = ServerState(settings, lm)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state.start_loading()
        state.batcher.start()
        try:
            yield
        finally:
            await state.batcher.stop()

    app = FastAPI(title="egtlm", version=__version__, description=DESCRIPTION, lifespan=lifespan)
    app.state.egtlm = state
    errors.install(app)
    for module in (embeddings, chat, documents, meta):
        app.include_router(module.router)
    app.add_middleware(CountRequests, metrics=state.metrics)  # type: ignore[arg-type]
    app.add_middleware(Guard, api_key=settings.api_key, max_bytes=settings.max_request_bytes)  # type: ignore[arg-type]
    app.add_middleware(NameProcess)  # type: ignore[arg-type]
    return app


def serve(
    settings: ServerSettings, host: str = "127.0.0.1", port: int = 8000, **uvicorn_options: Any
) -> None:
    """Run the server until interrupted (what `egtlm serve` does)."""
    try:
        import uvicorn
    except ImportError as err:
        raise ImportError("egtlm serve needs uvicorn and fastapi: pip install 'egtlm[server]'") from err
    uvicorn.run(create_app(settings), host=host, port=port, **uvicorn_options)
