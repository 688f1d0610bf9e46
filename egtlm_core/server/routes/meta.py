"""`GET /v1/models`, `GET /health` (open, 503 while the model loads) and `GET /metrics` (opt-in)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from ..errors import APIError
from ..schemas import ModelCard, ModelList
from .common import state_of

router = APIRouter()


@router.get("/v1/models", response_model=ModelList)
async def list_models(request: Request) -> dict[str, Any]:
    state = state_of(request)
    return {"object": "list", "data": [_card(state, name) for name in state.names]}


@router.get("/v1/models/{model_id}", response_model=ModelCard)
async def get_model(model_id: str, request: Request) -> dict[str, Any]:
    state = state_of(request)
    state.check_model(model_id)
    return _card(state, model_id)


def _card(state: Any, name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": state.created, "owned_by": "egtlm"}


@router.get("/health")
async def health(request: Request) -> JSONResponse:
    """200 once the model is loaded; 503 while it loads or if loading failed. Never needs the key."""
    state = state_of(request)
    if state.load_error is not None:
        return JSONResponse({"status": "error", "error": str(state.load_error)}, status_code=503)
    if not state.ready.is_set():
        return JSONResponse({"status": "loading"}, status_code=503)
    return JSONResponse({"status": "ok", "model": state.served_name})


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    state = state_of(request)
    if not state.metrics.enabled:
        raise APIError(404, "Metrics are off; start the server with --metrics.", code="metrics_disabled")
    body, content_type = state.metrics.render()
    return Response(body, media_type=content_type)
