"""`POST /v1/embeddings`: OpenAI's embeddings, micro-batched across concurrent requests."""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from ..errors import APIError
from ..schemas import EmbeddingRequest, EmbeddingResponse
from ..sse import until_disconnect
from .common import check_lengths, state_of

router = APIRouter()


def _texts(value: Any, max_items: int) -> list[str]:
    items = [value] if isinstance(value, str) else list(value)
    if not items:
        raise APIError(400, "input is an empty list; send at least one text.", param="input")
    if any(not isinstance(x, str) for x in items):
        raise APIError(
            400,
            "input holds token ids; this server takes text only (it tokenizes with its own tokenizer). "
            "With LangChain's OpenAIEmbeddings pass check_embedding_ctx_length=False.",
            param="input",
            code="token_ids_not_supported",
        )
    if len(items) > max_items:
        raise APIError(
            400, f"input has {len(items)} texts; the limit is {max_items} per request.", param="input"
        )
    return items


def _encoded(vector: np.ndarray, encoding: str) -> list[float] | str:
    if encoding == "base64":
        return base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
    return vector.tolist()


@router.post("/v1/embeddings", response_model=None, responses={200: {"model": EmbeddingResponse}})
async def embeddings(body: EmbeddingRequest, request: Request) -> JSONResponse:
    """Embed a text or a list of texts (`input_type`, an egtlm extension, picks the query or the
    document instruction; default: document)."""
    state = state_of(request)
    lm = state.lm
    state.check_model(body.model)
    texts = _texts(body.input, state.settings.max_input_items)
    check_lengths(texts, state.settings.max_input_chars, "input")
    if body.dimensions is not None and body.dimensions > lm.embedding_dim:
        raise APIError(
            400, f"dimensions={body.dimensions} is above the model's {lm.embedding_dim}.", param="dimensions"
        )
    vectors, tokens, queued = await until_disconnect(
        request, state.batcher.embed(texts, body.input_type or "document", body.dimensions)
    )
    state.metrics.queued("embedding", queued)
    state.metrics.count_tokens("embedding", sum(tokens))
    data = [
        {"object": "embedding", "index": i, "embedding": _encoded(v, body.encoding_format)}
        for i, v in enumerate(vectors)
    ]
    total = int(sum(tokens))
    return JSONResponse(
        {
            "object": "list",
            "data": data,
            "model": state.served_name,
            "usage": {"prompt_tokens": total, "total_tokens": total},
        }
    )
