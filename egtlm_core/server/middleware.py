"""ASGI middleware: the optional bearer key, the request size limit, per-route request counts.

Pure ASGI rather than `BaseHTTPMiddleware`, so streamed responses pass through untouched and a
client's disconnect still reaches the route (which stops its generation).
"""

from __future__ import annotations

import hmac
import json
import os
import socket
from typing import Any

from .errors import error_body
from .metrics import Metrics

OPEN_PATHS = ("/health",)


async def _send_error(send: Any, status: int, message: str, code: str | None = None) -> None:
    body = json.dumps(error_body(status, message, code=code)).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class Guard:
    """Refuses requests without the bearer key (401) or with a body over `max_bytes` (413)."""

    def __init__(self, app: Any, api_key: str | None, max_bytes: int) -> None:
        self.app, self.api_key, self.max_bytes = app, api_key, max_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        if self.api_key is not None and scope["path"] not in OPEN_PATHS:
            given = headers.get(b"authorization", b"").decode("latin-1")
            scheme, _, token = given.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip(), self.api_key):
                await _send_error(
                    send,
                    401,
                    "Missing or wrong API key: send 'Authorization: Bearer <key>'.",
                    "invalid_api_key",
                )
                return
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await _send_error(
                send,
                413,
                f"The request body has {int(length)} bytes; the limit is "
                f"{self.max_bytes} (--max-request-bytes).",
                "request_too_large",
            )
            return
        if length is None and scope.get("method") in ("POST", "PUT", "PATCH"):
            body = await self._read_capped(receive)
            if body is None:
                await _send_error(
                    send,
                    413,
                    f"The request body is over the limit of {self.max_bytes} bytes.",
                    "request_too_large",
                )
                return
            receive = _replay(body, receive)
        await self.app(scope, receive, send)

    async def _read_capped(self, receive: Any) -> bytes | None:
        """A chunked body, read whole (None once it passes the limit)."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return b"".join(chunks)
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


def _replay(body: bytes, receive: Any) -> Any:
    sent = False

    async def replay() -> dict:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


class CountRequests:
    """Counts every response by route template and status in the metrics."""

    def __init__(self, app: Any, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not self.metrics.enabled:
            await self.app(scope, receive, send)
            return

        async def counting_send(message: dict) -> None:
            if message["type"] == "http.response.start":
                route = scope.get("route")
                self.metrics.request(getattr(route, "path", "unmatched"), message["status"])
            await send(message)

        await self.app(scope, receive, counting_send)


class NameProcess:
    """Names the process that answered (`x-egtlm-process: host:pid`) on every response: behind a load
    balancer or Ray Serve's proxy, which replica served a request is otherwise invisible."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.value = f"{socket.gethostname()}:{os.getpid()}".encode()

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def naming_send(message: dict) -> None:
            if message["type"] == "http.response.start":
                message = {
                    **message,
                    "headers": [*message.get("headers", []), (b"x-egtlm-process", self.value)],
                }
            await send(message)

        await self.app(scope, receive, naming_send)
