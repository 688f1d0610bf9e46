"""egtlm's own routes: documents (embedded and their KV states captured), retrieval, answers.

Documents live in the model's own index (`EgtLM.documents`) and its shared-cache store. Indexed and
retrieved texts are handed to the chat engine, so any client that puts them in a chat prompt (a
LangChain chain over `/v1/chat/completions`, another process) gets their states spliced.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse

from ...generation.async_bridge import iterate_in_thread, run_in_thread
from ...rag.index import ScoredDocument
from ..chat_response import stats, usage
from ..errors import APIError, stream_error
from ..schemas import (
    AnswerRequest,
    AnswerResponse,
    DeletedDocument,
    DocumentList,
    DocumentOut,
    DocumentsRequest,
    DocumentsResponse,
    RetrieveRequest,
    RetrieveResponse,
)
from ..sse import DONE, event, until_disconnect, while_connected
from .common import check_lengths, state_of

router = APIRouter(tags=["egtlm"])


def _scored(hit: ScoredDocument) -> dict[str, Any]:
    doc = hit.document
    return {"id": doc.id, "text": doc.text, "metadata": doc.metadata, "score": hit.score}


@router.post("/v1/documents", response_model=DocumentsResponse)
async def add_documents(body: DocumentsRequest, request: Request) -> dict[str, Any]:
    """Index documents: embed them and capture their KV states (an id already present is replaced)."""
    state = state_of(request)
    lm = state.lm
    texts = [d.text for d in body.documents]
    check_lengths(texts, state.settings.max_input_chars, "documents.text")
    given = [d.id for d in body.documents]
    if any(i is not None for i in given) and not all(i is not None for i in given):
        raise APIError(
            400, "Give every document an id, or none (ids then hash the text).", param="documents.id"
        )
    ids = given if all(i is not None for i in given) else None
    metadatas = [d.metadata or {} for d in body.documents]

    def index(_: threading.Event) -> tuple[list[str], list[int]]:
        cache = lm.document_cache
        doc_ids = cache.add(texts, ids=ids, metadatas=metadatas)  # type: ignore[arg-type]
        cache.hand_out(texts)  # chat prompts holding these texts splice their states
        tokens = [len(t) for t in lm.tokenizer(texts, add_special_tokens=False)["input_ids"]]
        return doc_ids, tokens

    doc_ids, tokens = await run_in_thread(index, "egtlm-index")
    state.metrics.count_tokens("indexed", sum(tokens))
    data = [{"id": i, "object": "document", "tokens": n} for i, n in zip(doc_ids, tokens, strict=True)]
    return {"object": "list", "data": data, "total": len(lm.documents)}


@router.get("/v1/documents", response_model=DocumentList)
async def list_documents(
    request: Request, limit: int = Query(100, ge=1, le=1000), offset: int = Query(0, ge=0)
) -> dict[str, Any]:
    """The indexed documents, in index order, a page at a time."""
    documents = state_of(request).lm.documents
    ids = documents.ids[offset : offset + limit]
    data = [{"id": d.id, "text": d.text, "metadata": d.metadata} for d in documents.get(ids) if d is not None]
    return {"object": "list", "data": data, "total": len(documents)}


@router.get("/v1/documents/{doc_id}", response_model=DocumentOut)
async def get_document(doc_id: str, request: Request) -> dict[str, Any]:
    (doc,) = state_of(request).lm.documents.get([doc_id])
    if doc is None:
        raise APIError(404, f"No document with id {doc_id!r}.", param="id", code="document_not_found")
    return {"id": doc.id, "text": doc.text, "metadata": doc.metadata}


@router.delete("/v1/documents/{doc_id}", response_model=DeletedDocument)
async def delete_document(doc_id: str, request: Request) -> dict[str, Any]:
    """Remove a document and its stored KV states."""
    lm = state_of(request).lm
    removed = await run_in_thread(lambda _: lm.document_cache.delete([doc_id]), "egtlm-delete")
    if not removed:
        raise APIError(404, f"No document with id {doc_id!r}.", param="id", code="document_not_found")
    return {"id": doc_id, "object": "document", "deleted": True}


@router.post("/v1/retrieve", response_model=RetrieveResponse)
async def retrieve(body: RetrieveRequest, request: Request) -> dict[str, Any]:
    """The k indexed documents most similar to the query, best first (cosine scores)."""
    state = state_of(request)
    lm = state.lm
    check_lengths([body.query], state.settings.max_input_chars, "query")
    hits = await run_in_thread(lambda _: lm.search(body.query, body.k), "egtlm-retrieve")
    return {"object": "list", "data": [_scored(h) for h in hits]}


@router.post(
    "/v1/answer",
    response_model=None,
    responses={200: {"model": AnswerResponse, "content": {"text/event-stream": {}}}},
)
async def answer(body: AnswerRequest, request: Request) -> Any:
    """Retrieve the top-k documents and answer from them, reusing their stored KV states.

    With `stream: true` the events are {"type": "documents"}, {"type": "delta", "text"} ...,
    {"type": "done", "usage", "finish_reason", "egtlm"}, then [DONE].
    """
    state = state_of(request)
    lm = state.lm
    settings = state.settings
    check_lengths([body.question], settings.max_input_chars, "question")
    max_tokens = settings.default_max_tokens if body.max_tokens is None else body.max_tokens
    if max_tokens > settings.max_tokens:
        raise APIError(
            400,
            f"max_tokens={max_tokens} is above this server's limit of {settings.max_tokens}.",
            param="max_tokens",
        )
    if len(lm.documents) == 0:
        raise APIError(400, "No documents are indexed; POST /v1/documents first.", code="no_documents")
    stop = [body.stop] if isinstance(body.stop, str) else body.stop
    hits = await run_in_thread(lambda _: lm.search(body.question, body.k), "egtlm-retrieve")
    texts = [h.document.text for h in hits]
    cancel = threading.Event()
    options: dict[str, Any] = dict(
        documents=texts,
        max_new_tokens=max_tokens,
        temperature=body.temperature,
        stop=stop or (),
        recompute_tokens=body.recompute_tokens,
        cancel=cancel,
    )
    if body.stream:
        stream = await run_in_thread(
            lambda _: lm.answer(body.question, stream=True, **options), "egtlm-answer"
        )
        return StreamingResponse(_sse(request, stream, cancel, hits), media_type="text/event-stream")
    try:
        result = await until_disconnect(
            request, run_in_thread(lambda _: lm.answer(body.question, **options), "egtlm-answer")
        )
    finally:
        cancel.set()
    state.metrics.generation("answer", result)
    return JSONResponse(
        {
            "object": "answer",
            "answer": result.text,
            "documents": [_scored(h) for h in hits],
            "finish_reason": result.finish_reason,
            "usage": usage(result),
            "egtlm": stats(result),
        }
    )


async def _sse(request: Request, stream: Any, cancel: threading.Event, hits: list) -> AsyncIterator[bytes]:
    def pieces(cancelled: threading.Event) -> Iterator[str]:
        try:
            for piece in stream:
                if cancelled.is_set():
                    return
                yield piece
        finally:
            stream.close()

    try:
        yield event({"type": "documents", "documents": [_scored(h) for h in hits]})
        async for piece in while_connected(request, iterate_in_thread(pieces, "egtlm-answer-stream")):
            yield event({"type": "delta", "text": piece})
        if await request.is_disconnected():
            return
        result = stream.result
        state_of(request).metrics.generation("answer", result)
        yield event(
            {
                "type": "done",
                "finish_reason": result.finish_reason,
                "usage": usage(result),
                "egtlm": stats(result),
            }
        )
        yield DONE
    except Exception as err:
        yield event(stream_error(err))
        yield DONE
    finally:
        cancel.set()
