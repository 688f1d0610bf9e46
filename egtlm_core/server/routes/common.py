"""What every route reaches for: the server state, and input limits shared by several routes."""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import Request

from ..errors import APIError
from ..state import ServerState


def state_of(request: Request) -> ServerState:
    return request.app.state.egtlm


def check_lengths(texts: Sequence[str], limit: int, param: str) -> None:
    """Each text non-blank and at most `limit` characters (400 naming the first that is not)."""
    for i, text in enumerate(texts):
        where = f"{param}[{i}]" if len(texts) > 1 or param == "input" else param
        if not text.strip():
            raise APIError(400, f"{where} is empty; send text to work on.", param=param)
        if len(text) > limit:
            raise APIError(
                400,
                f"{where} has {len(text)} characters; this server takes at most {limit} per text "
                "(--max-input-chars). Split long texts into chunks.",
                param=param,
                code="input_too_long",
            )
