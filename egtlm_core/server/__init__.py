"""`egtlm serve`: one OpenAI-compatible server that embeds, answers and shares document states.

Needs the server extra (fastapi, uvicorn, prometheus-client): pip install 'egtlm[server]'.
"""

from __future__ import annotations

try:
    import fastapi  # noqa: F401
except ImportError as err:  # pragma: no cover - the extra is missing
    raise ImportError("egtlm's server needs fastapi and uvicorn: pip install 'egtlm[server]'") from err

from .app import create_app, serve
from .background import BackgroundServer, free_port
from .settings import API_KEY_ENV, ServerSettings

__all__ = ["API_KEY_ENV", "BackgroundServer", "ServerSettings", "create_app", "free_port", "serve"]
