"""`POST /v1/chat/completions`: OpenAI's chat, with tools, JSON output, streaming and the shared cache."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse

from ...generation.async_bridge import iterate_in_thread, run_in_thread
from ..chat_request import build_chat_call
from ..chat_response import completion, completion_id, created_now, stream_chunks, usage
from ..errors import stream_error
from ..schemas import ChatRequest, ChatResponse
from ..sse import DONE, event, until_disconnect, while_connected
from .common import state_of

router = APIRouter()


@router.post(
    "/v1/chat/completions",
    response_model=None,
    responses={200: {"model": ChatResponse, "content": {"text/event-stream": {}}}},
)
async def chat_completions(body: ChatRequest, request: Request) -> Any:
    """Chat; documents this server indexed that appear in the prompt are spliced from the cache
    (`usage.prompt_tokens_details.cached_tokens` counts them)."""
    state = state_of(request)
    lm = state.lm
    state.check_model(body.model)
    call = build_chat_call(body, state.settings)
    cid, created = completion_id(), created_now()
    cancel = threading.Event()
    if body.stream:
        # Inputs are checked here (a 400, not a broken stream); generating starts when read.
        stream = await run_in_thread(
            lambda _: lm.stream_chat(call.messages, **call.kwargs(cancel)), "egtlm-chat"
        )
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return StreamingResponse(
            _sse(request, stream, cancel, include_usage, state.served_name, cid, created),
            media_type="text/event-stream",
        )
    try:
        result = await until_disconnect(
            request, run_in_thread(lambda _: lm.chat(call.messages, **call.kwargs(cancel)), "egtlm-chat")
        )
    finally:
        cancel.set()  # a no-op once finished; stops the generation if the client went away
    state.metrics.generation("chat", result)
    return JSONResponse(completion(result, state.served_name, cid, created))


async def _sse(
    request: Request,
    stream: Any,
    cancel: threading.Event,
    include_usage: bool,
    model: str,
    cid: str,
    created: int,
) -> AsyncIterator[bytes]:
    def chunks(cancelled: threading.Event) -> Iterator[dict[str, Any]]:
        try:
            for item in stream_chunks(stream, model, cid, created):
                if cancelled.is_set():
                    return
                yield item
        finally:
            stream.close()

    state = state_of(request)
    try:
        async for item in while_connected(request, iterate_in_thread(chunks, "egtlm-chat-stream")):
            yield event(item)
        if await request.is_disconnected():
            return
        state.metrics.generation("chat", stream.result)
        if include_usage:
            yield event({**_usage_chunk(cid, created, model), "usage": usage(stream.result)})
        yield DONE
    except Exception as err:  # the 200 is sent: report the error as an event
        yield event(stream_error(err))
        yield DONE
    finally:
        cancel.set()


def _usage_chunk(cid: str, created: int, model: str) -> dict[str, Any]:
    return {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model, "choices": []}
