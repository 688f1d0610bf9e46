"""`egtlm index PATH...` and `egtlm ask "question"`: shared-cache RAG without a framework.

Both run in-process (the index is saved under the user cache dir, KV states in the model's disk
store) or against a running `egtlm serve` (`--server URL`), which holds documents and states for
every client.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from .documents import CHUNK_CHARS, chunked_documents, default_index_path, load_index, save_index
from .options import _positive_int, load_model, loading_kwargs

BATCH = 16  # chunks per indexing call (one progress step)


def _rag_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--server", default=None, metavar="URL", help="a running `egtlm serve` (else in-process)")
    p.add_argument("--api-key", default=None, help="the server's key (default: EGTLM_API_KEY)")
    p.add_argument(
        "--index-file", default=None, metavar="PATH", help="in-process index (default: user cache)"
    )
    p.add_argument(
        "--redis",
        default=None,
        metavar="URL",
        help="keep KV states in this Redis (redis://host:port/db) as well, for every process to reuse",
    )


def register(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "index",
        parents=parents,
        help="index .txt/.md/.jsonl/.parquet files or folders for `egtlm ask`",
        description="Chunk the files, embed the chunks and store their KV states.",
    )
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.add_argument("--chunk-chars", type=_positive_int, default=CHUNK_CHARS, metavar="N")
    p.add_argument(
        "--ray",
        nargs="?",
        const="local",
        default=None,
        metavar="ADDRESS",
        help="index on Ray Data: a local cluster, or ADDRESS (auto, ray://host:10001); needs egtlm[ray]",
    )
    p.add_argument("--actors", type=_positive_int, default=2, metavar="N", help="Ray actors (one model each)")
    _rag_options(p)
    p.set_defaults(func=cmd_index)
    q = sub.add_parser(
        "ask",
        parents=parents,
        help="answer a question from the indexed documents",
        description="Retrieve the top-k chunks and answer from them, reusing their KV states; "
        "the answer streams to stdout, the documents used go to stderr.",
    )
    q.add_argument("question")
    q.add_argument("-k", type=_positive_int, default=4, metavar="K")
    q.add_argument("--max-new-tokens", type=_positive_int, default=256, metavar="N")
    _rag_options(q)
    q.set_defaults(func=cmd_ask)


def _state_store(args: argparse.Namespace) -> Any:
    """With --redis: 1 GiB of RAM in front of the Redis every process reaches (else the default)."""
    if not args.redis:
        return None
    from ..scale.redis_backing import shared_state_store

    return shared_state_store(args.redis)


def _client(args: argparse.Namespace) -> Any:
    import httpx

    key = args.api_key or os.environ.get("EGTLM_API_KEY")
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.Client(base_url=args.server.rstrip("/"), headers=headers, timeout=600)


def _checked(response: Any) -> Any:
    if response.status_code >= 400:
        try:
            message = response.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = response.text
        raise RuntimeError(f"The server answered {response.status_code}: {message}")
    return response


def cmd_index(args: argparse.Namespace) -> int:
    docs = chunked_documents(args.paths, args.chunk_chars)
    index_file = Path(args.index_file) if args.index_file else default_index_path()
    if args.ray is not None and not args.server:
        return _index_on_ray(args, docs, index_file)
    if args.server:
        client = _client(args)
        add = lambda batch: _checked(client.post("/v1/documents", json={"documents": batch}))  # noqa: E731
    else:
        lm = load_model(args, mode="unified", cache_store=_state_store(args))
        if index_file.is_file():
            load_index(index_file, lm.documents)
        add = lambda batch: lm.index(  # noqa: E731
            [d["text"] for d in batch], [d["id"] for d in batch], [d["metadata"] for d in batch]
        )
    with tqdm(total=len(docs), unit="chunk", desc="Indexing", file=sys.stderr) as bar:
        for start in range(0, len(docs), BATCH):
            batch = docs[start : start + BATCH]
            add(batch)
            bar.update(len(batch))
    if not args.server:
        save_index(lm.documents, index_file)
    where = args.server or str(index_file)
    print(
        f"Indexed {len(docs)} chunks from {len({d['metadata']['source'] for d in docs})} files ({where}).",
        file=sys.stderr,
    )
    return 0


def _index_on_ray(args: argparse.Namespace, docs: list[dict[str, Any]], index_file: Path) -> int:
    """`egtlm index --ray`: actors embed and capture; each finished batch is saved to the index file
    at once, so a stopped run resumes where it was (indexed ids are skipped)."""
    from ..rag.index import DocumentIndex
    from ..scale import RayIndexOptions, index_on_ray

    index = DocumentIndex()
    if index_file.is_file():
        load_index(index_file, index)
    settings = {**loading_kwargs(args), "mode": "unified"}
    options = RayIndexOptions(model=args.model, settings=settings, redis_url=args.redis, actors=args.actors)
    address = None if args.ray == "local" else args.ray
    done = set(index.ids)
    todo = len({d["id"] for d in docs} - done)
    with tqdm(total=todo, unit="chunk", desc="Indexing on Ray", file=sys.stderr) as bar:
        for batch in index_on_ray(docs, options, done=done, address=address):
            index.upsert(batch.ids, batch.texts, batch.vectors, batch.metadatas)
            save_index(index, index_file)
            bar.update(len(batch.ids))
    print(f"Indexed {todo} new chunks on Ray ({len(index)} in {index_file}).", file=sys.stderr)
    return 0


def _print_sources(documents: list[dict[str, Any]], cached: int) -> None:
    print(f"\nDocuments used ({cached} prompt tokens reused from the cache):", file=sys.stderr)
    for d in documents:
        print(f"  {d['score']:.3f}  {d['id']}", file=sys.stderr)


def cmd_ask(args: argparse.Namespace) -> int:
    if not args.question.strip():
        raise ValueError("The question is empty.")
    if args.server:
        return _ask_server(args)
    lm = load_model(args, mode="unified", cache_store=_state_store(args))
    load_index(Path(args.index_file) if args.index_file else default_index_path(), lm.documents)
    hits = lm.search(args.question, args.k)
    stream = lm.answer(
        args.question,
        documents=[h.document.text for h in hits],
        max_new_tokens=args.max_new_tokens,
        stream=True,
    )
    for piece in stream:
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")
    used = [{"id": h.document.id, "score": h.score} for h in hits]
    _print_sources(used, stream.result.reused_tokens)
    return 0


def _ask_server(args: argparse.Namespace) -> int:
    body = {"question": args.question, "k": args.k, "max_tokens": args.max_new_tokens, "stream": True}
    documents: list[dict[str, Any]] = []
    cached = 0
    with _client(args) as client, client.stream("POST", "/v1/answer", json=body) as response:
        if response.status_code >= 400:
            response.read()
            _checked(response)
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            if "error" in event:
                raise RuntimeError(event["error"]["message"])
            if event["type"] == "documents":
                documents = event["documents"]
            elif event["type"] == "delta":
                sys.stdout.write(event["text"])
                sys.stdout.flush()
            elif event["type"] == "done":
                cached = event["usage"]["prompt_tokens_details"]["cached_tokens"]
    sys.stdout.write("\n")
    _print_sources(documents, cached)
    return 0
