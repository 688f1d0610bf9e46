"""`egtlm serve --replicas N` under load: 1 vs 2 Ray Serve replicas, 32 loopback clients.

    redis-server --port 6390 --save '' --appendonly no &
    python benchmarks/serve_replicas.py --redis redis://127.0.0.1:6390/0     # ~3 minutes on 2 cores

A local Ray cluster with one CPU per core; for each replica count (1, 2, then 2, 1: interleaved) the
server app is deployed on Ray Serve (`serve_on_ray`, one CPU and one torch thread per replica, states
and documents in the given Redis), 12 XQuAD paragraphs are posted once, then 32 asyncio httpx clients
run (1) embeddings only and (2) a mixed load: 70% embeddings, 15% chat, 15% `/v1/answer`. Every
response is checked as in `server_load.py`: embeddings equal in-process vectors, answers report
cached tokens > 0, which with 2 replicas means the states one replica captured were spliced by the
other too. Prints the table and the 2-vs-1 throughput ratios; writes docs/benchmarks/serve_replicas.md
(+ .json). The clients share the cores with the replicas, as in `server_load.py`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
from pathlib import Path
from typing import Any

from _common import (
    DOCS_BENCH_DIR,
    add_model_option,
    ensure_repo_on_path,
    machine_info,
    machine_markdown,
    markdown_table,
    model_name,
    write_text,
    xquad_paragraphs,
)

ensure_repo_on_path()

import httpx  # noqa: E402
import redis  # noqa: E402
import torch  # noqa: E402
from server_load import MODEL, Phase, answer_request, chat_request, drive, embed_request  # noqa: E402

from egtlm_core import EgtLM  # noqa: E402
from egtlm_core.evaluation import read_stsb  # noqa: E402
from egtlm_core.server import ServerSettings, free_port  # noqa: E402


def run_replicas(replicas: int, settings: ServerSettings, args: Any, picks: dict[str, Any]) -> list[Phase]:
    """Deploy `replicas`, post the documents, drive both phases; -> the phases (then undeploy)."""
    from ray import serve

    from egtlm_core.scale import serve_on_ray

    port = free_port()
    serve_on_ray(settings, replicas, port=port, cpus_per_replica=1, blocking=False)
    url = f"http://127.0.0.1:{port}"
    try:
        posted = httpx.post(url + "/v1/documents", timeout=600, json={"documents": picks["documents"]})
        posted.raise_for_status()
        phases = [
            asyncio.run(
                drive(url, args.clients, args.seconds, Phase(f"{replicas}x embeddings"), picks["embed"])
            ),
            asyncio.run(
                drive(url, args.clients, args.mixed_seconds, Phase(f"{replicas}x mixed"), picks["mixed"])
            ),
        ]
    finally:
        serve.shutdown()
    return phases


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_model_option(ap)
    ap.add_argument(
        "--redis", required=True, metavar="URL", help="a Redis the replicas share (flushed first)"
    )
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=20.0, help="embeddings phase, per deployment")
    ap.add_argument("--mixed-seconds", type=float, default=25.0)
    ap.add_argument("--cpus", type=int, default=os.cpu_count() or 2, help="CPUs of the local Ray cluster")
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--out", type=Path, default=DOCS_BENCH_DIR, help="folder for the page and JSON")
    args = ap.parse_args(argv)
    import ray

    model_path = model_name(args)
    torch.set_num_threads(1)
    f32 = {"torch_dtype": "float32"}
    lm = EgtLM(model_path, **f32)
    sentences = [p.text1 for p in read_stsb("test")][:400]
    expected = {s: v for s, v in zip(sentences, lm.encode_documents(sentences), strict=True)}
    paragraphs, questions = zip(*[(text, q.question) for text, q in xquad_paragraphs()[:12]], strict=True)

    def embed(rng: random.Random) -> Any:
        text = rng.choice(sentences)
        return lambda client, phase: embed_request(client, text, expected[text], phase)

    def mixed(rng: random.Random) -> Any:
        roll = rng.random()
        if roll < 0.70:
            return embed(rng)
        question = rng.choice(questions)
        if roll < 0.85:
            return lambda client, phase: chat_request(client, question, phase)
        return lambda client, phase: answer_request(client, question, phase)

    documents = [{"id": f"xq{i}", "text": t} for i, t in enumerate(paragraphs)]
    picks = {"embed": embed, "mixed": mixed, "documents": documents}
    settings = ServerSettings(model=model_path, model_kwargs=f32, served_name=MODEL, redis_url=args.redis)
    redis.Redis.from_url(args.redis).flushdb()
    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
    phases: dict[int, list[Phase]] = {1: [], 2: []}
    try:
        for replicas in (1, 2, 2, 1):
            got = run_replicas(replicas, settings, args, picks)
            phases[replicas] += got
            counts = [
                f"{p.name}: {sum(map(len, p.latencies.values()))} requests, {len(p.errors)} errors"
                for p in got
            ]
            print("; ".join(counts), file=sys.stderr)
    finally:
        ray.shutdown()

    def rate(p: Phase, kind: str | None = None) -> float:
        values = p.latencies.get(kind, []) if kind else [x for v in p.latencies.values() for x in v]
        return len(values) / p.seconds

    by_phase = {r: {name: [p for p in ps if p.name.endswith(name)] for name in ("embeddings", "mixed")}
                for r, ps in phases.items()}  # fmt: skip
    ratios = {
        name: [rate(two) / rate(one) for one, two in zip(by_phase[1][name], by_phase[2][name], strict=True)]
        for name in ("embeddings", "mixed")
    }
    errors = [e for ps in phases.values() for p in ps for e in p.errors]
    rows = [row for r in (1, 2) for p in phases[r] for row in p.rows()]
    table = markdown_table(["phase", "request", "n", "req/s", "p50 ms", "p95 ms"], rows)
    runs = {name: ", ".join(f"{x:.2f}x" for x in values) for name, values in ratios.items()}
    summary = (
        f"2 replicas vs 1 at {args.clients} clients, requests/s: embeddings "
        f"{statistics.median(ratios['embeddings']):.2f}x (runs {runs['embeddings']}), "
        f"mixed {statistics.median(ratios['mixed']):.2f}x (runs {runs['mixed']}). Errors: {len(errors)}."
    )
    print(table)
    print(summary)
    for e in errors[:5]:
        print("error:", e, file=sys.stderr)
    if not args.no_write:
        info = machine_info(("torch", "transformers", "ray", "redis", "fastapi", "httpx"))
        page = PAGE.format(
            clients=args.clients, seconds=args.seconds, mixed_seconds=args.mixed_seconds, table=table,
            summary=summary, machine=machine_markdown(info), cpus=args.cpus,
        )  # fmt: skip
        write_text(args.out / "serve_replicas.md", page)
        record = {"rows": rows, "ratios": ratios, "errors": errors, "machine": info, "args": vars(args)}
        write_text(args.out / "serve_replicas.json", json.dumps(record, indent=1, default=str))
    return 0 if not errors else 1


PAGE = """# `egtlm serve --replicas`: 1 vs 2 replicas on Ray Serve

`python benchmarks/serve_replicas.py --redis URL`: a local Ray cluster of {cpus} CPUs; the server app
deployed with 1 and with 2 replicas (one CPU and one torch thread each; runs interleaved 1, 2, 2, 1),
states and documents in one Redis; {clients} concurrent asyncio httpx clients in the benchmark's
process. The packaged SmolLM2-135M-Instruct in float32. Every response is checked: embeddings equal
in-process `encode_documents` within 1e-5, chats finish, answers report cached tokens > 0 (with 2
replicas, from whichever replica captured the documents).

- **embeddings**, {seconds:.0f} s per deployment: one short STS-B test sentence per request.
- **mixed**, {mixed_seconds:.0f} s: 70% embeddings, 15% chat (16 tokens), 15% `/v1/answer` (k = 2 of 12
  XQuAD paragraphs posted once, 16 tokens).

{table}

{summary}

Reading: embeddings are the request that scales with replicas (each replica embeds in its own
process on its own core; micro-batches of up to 32 texts, `max_ongoing_requests` 64 per replica).
The mixed load scales less: every replica has one CPU generation slot, so chats and answers queue
behind each other (their p50 is mostly queueing), and the 32 clients, Ray Serve's proxy and Redis
run on the same 2 cores as the replicas. Every answer reported cached tokens > 0, including those
a replica answered from states another replica captured.

## Machine

{machine}
"""


if __name__ == "__main__":
    raise SystemExit(main())
