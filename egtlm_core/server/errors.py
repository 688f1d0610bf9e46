"""Errors in OpenAI's shape, {"error": {"message", "type", "param", "code"}}, for every failure.

Clients (the openai SDK, LangChain, LlamaIndex) read `error.message`; a bad request is a 4xx that
says what was wrong, never a 500. A ValueError/TypeError raised by the core while checking user
input is such a bad request too (the core validates where values enter).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

logger = logging.getLogger(__name__)

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    503: "service_unavailable",
}


class APIError(Exception):
    """An error a handler returns to the client as-is."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code


def error_body(status: int, message: str, param: str | None = None, code: str | None = None) -> dict:
    kind = _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def error_response(
    status: int, message: str, param: str | None = None, code: str | None = None
) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(error_body(status, message, param, code), status_code=status, headers=headers)


def _validation_message(err: RequestValidationError) -> tuple[str, str | None]:
    """The first problem of a request that failed its schema, as "param: what is wrong"."""
    errors = err.errors()
    if not errors:
        return "Invalid request.", None
    first = errors[0]
    if first.get("type") == "json_invalid":
        return f"The request body is not valid JSON: {first.get('ctx', {}).get('error', '')}".strip(), None
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    if not loc and first.get("type") in ("model_attributes_type", "dict_type", "missing"):
        return "The request body must be a JSON object (Content-Type: application/json).", None
    param = ".".join(loc) or None
    more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
    where = f"{param}: " if param else ""
    return f"{where}{first.get('msg', 'invalid value')}{more}", param


def install(app: FastAPI) -> None:
    """Register the handlers that turn every failure into an OpenAI-shaped error."""

    @app.exception_handler(APIError)
    async def _api(request: Request, err: APIError) -> JSONResponse:
        return error_response(err.status, err.message, err.param, err.code)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, err: RequestValidationError) -> JSONResponse:
        message, param = _validation_message(err)
        return error_response(400, message, param, "invalid_value")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, err: StarletteHTTPException) -> JSONResponse:
        return error_response(err.status_code, str(err.detail))

    @app.exception_handler(ValueError)
    async def _value(request: Request, err: ValueError) -> JSONResponse:
        return error_response(400, str(err), code="invalid_value")

    @app.exception_handler(TypeError)
    async def _type(request: Request, err: TypeError) -> JSONResponse:
        return error_response(400, str(err), code="invalid_type")

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, err: Exception) -> JSONResponse:
        logger.exception("Unhandled error serving %s %s", request.method, request.url.path)
        return error_response(500, f"Internal error: {type(err).__name__}: {err}")


def stream_error(err: BaseException) -> dict[str, Any]:
    """An error met mid-stream (the 200 is sent already), as the body of one SSE event."""
    if isinstance(err, APIError):
        return error_body(err.status, err.message, err.param, err.code)
    if isinstance(err, (ValueError, TypeError)):
        return error_body(400, str(err))
    logger.error("Error while streaming", exc_info=err)
    return error_body(500, f"Internal error: {type(err).__name__}: {err}")
