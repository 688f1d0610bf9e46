"""`BackgroundServer`: a real uvicorn server in a thread of this process, on a free loopback port.

For notebooks, tests and benchmarks that want the server and its clients side by side: the model is
loaded once (shared with any adapter in the process), requests go over real HTTP.

Example:
    >>> with BackgroundServer(ServerSettings(model="path/to/model")) as server:
    ...     client = openai.OpenAI(base_url=server.url + "/v1", api_key="none")
"""

from __future__ import annotations

import socket
import threading
import time
import urllib.error
import urllib.request
from typing import Any

from ..model import EgtLM
from .app import create_app
from .settings import ServerSettings


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def health_status(url: str) -> int | None:
    """The HTTP status of `url`/health, or None while nothing answers there."""
    try:
        with urllib.request.urlopen(url + "/health", timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as err:
        return int(err.code)
    except OSError:
        return None


def wait_until_healthy(url: str, timeout_s: float = 300.0) -> None:
    """Return once `url`/health answers 200 (a server behind a proxy that may start late)."""
    deadline = time.monotonic() + timeout_s
    while health_status(url) != 200:
        if time.monotonic() > deadline:
            raise TimeoutError(f"The server on {url} was not ready within {timeout_s} s.")
        time.sleep(0.2)


class BackgroundServer:
    """Start with `start()` (or `with`), which returns once `/health` says the model is loaded."""

    def __init__(
        self,
        settings: ServerSettings | None = None,
        lm: EgtLM | None = None,
        host: str = "127.0.0.1",
        port: int | None = None,
        **uvicorn_options: Any,
    ) -> None:
        import uvicorn

        self.app = create_app(settings, lm)
        self.host, self.port = host, port or free_port(host)
        config = uvicorn.Config(
            self.app, host=self.host, port=self.port, log_level="warning", **uvicorn_options
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="egtlm-server", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout_s: float = 300.0) -> BackgroundServer:
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self._thread.is_alive():
                raise RuntimeError(f"The server on {self.url} stopped while starting.")
            status = health_status(self.url)
            if status == 200:
                return self
            if status == 503 and self.app.state.egtlm.load_error is not None:
                self.stop()
                raise RuntimeError(f"The model failed to load: {self.app.state.egtlm.load_error}")
            time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"The server on {self.url} was not ready within {timeout_s} s.")

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout=30)

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
