"""`egtlm serve [MODEL]`: the OpenAI-compatible server (docs/guide_server.md)."""

from __future__ import annotations

import argparse
from typing import Any

from .options import _positive_int, loading_kwargs


def register(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "serve",
        parents=parents,
        help="serve embeddings, chat and shared-cache RAG over OpenAI's API",
        description="One process, one model, one shared KV cache: /v1/embeddings, /v1/chat/completions, "
        "/v1/models, and egtlm's /v1/documents, /v1/retrieve, /v1/answer. The key also comes from "
        "EGTLM_API_KEY.",
    )
    p.add_argument("model_arg", nargs="?", default=None, metavar="MODEL", help="as --model")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=_positive_int, default=8000)
    p.add_argument("--api-key", default=None, help="require 'Authorization: Bearer KEY' (not on /health)")
    p.add_argument("--metrics", action="store_true", help="serve Prometheus metrics at /metrics")
    p.add_argument("--served-name", default=None, metavar="NAME", help="the model id clients send")
    p.add_argument("--alias", action="append", default=[], metavar="NAME", help="another accepted model id")
    p.add_argument(
        "--max-batch", type=_positive_int, default=32, metavar="N", help="texts per embedding call"
    )
    p.add_argument("--max-wait-ms", type=float, default=5.0, metavar="MS", help="embedding batch wait")
    p.add_argument(
        "--max-generations",
        type=_positive_int,
        default=None,
        metavar="N",
        help="concurrent generations (default: 1 on CPU)",
    )
    p.add_argument("--max-tokens", type=_positive_int, default=4096, metavar="N")
    p.add_argument("--max-request-bytes", type=_positive_int, default=4 << 20, metavar="N")
    p.add_argument("--max-input-chars", type=_positive_int, default=20_000, metavar="N")
    p.add_argument(
        "--redis",
        default=None,
        metavar="URL",
        help="keep document states and the document index in this Redis (redis://host:6379/0), shared "
        "by every server on it",
    )
    p.add_argument(
        "--replicas",
        type=_positive_int,
        default=None,
        metavar="N",
        help="serve N replicas on Ray Serve (needs --redis when N > 1)",
    )
    p.add_argument(
        "--ray",
        default=None,
        metavar="ADDRESS",
        help="with --replicas: a running Ray cluster (auto, ray://host:10001); default: start a local one",
    )
    p.add_argument(
        "--cpus-per-replica", type=float, default=1.0, metavar="N", help="Ray CPUs (and threads) per replica"
    )
    p.set_defaults(func=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    from ..server import ServerSettings, serve

    settings = ServerSettings.from_env(
        model=args.model_arg or args.model,
        model_kwargs=loading_kwargs(args),
        served_name=args.served_name,
        aliases=tuple(args.alias),
        api_key=args.api_key,
        metrics=args.metrics,
        max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms,
        generation_limit=args.max_generations,
        max_tokens=args.max_tokens,
        max_request_bytes=args.max_request_bytes,
        max_input_chars=args.max_input_chars,
        redis_url=args.redis,
    )
    if args.replicas is not None or args.ray is not None:
        from ..scale.ray_serve import serve_on_ray

        serve_on_ray(
            settings,
            args.replicas or 1,
            address=args.ray,
            host=args.host,
            port=args.port,
            cpus_per_replica=args.cpus_per_replica,
        )
        return 0
    serve(settings, host=args.host, port=args.port, log_level="info" if args.verbose else "warning")
    return 0
