"""One real uvicorn server per module on 127.0.0.1 (a free port), serving a tiny random model."""

from __future__ import annotations

import pytest
from server_fixtures import F32, MODEL

from egtlm_core import shared_lm
from egtlm_core.server import BackgroundServer, ServerSettings


@pytest.fixture(scope="module")
def tiny_lm(tiny_llama_dir):
    """The server's own EgtLM (the registry hands the server and the test the same object)."""
    return shared_lm(str(tiny_llama_dir), model_kwargs=F32)


@pytest.fixture(scope="module")
def server(tiny_llama_dir, tiny_lm):
    settings = ServerSettings(model=str(tiny_llama_dir), model_kwargs=F32, served_name=MODEL, max_tokens=512)
    with BackgroundServer(settings) as running:
        yield running
