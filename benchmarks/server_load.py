"""Load on `egtlm serve` over loopback: 32 concurrent clients, embeddings micro-batched vs not, and a
mixed embeddings / chat / answer run.

    OMP_NUM_THREADS=1 python benchmarks/server_load.py            # ~3 minutes on 2 busy CPU cores
    python benchmarks/server_load.py --seconds 10 --mixed-seconds 20   # quicker

One process: a real uvicorn server in a thread (`BackgroundServer`) over the packaged default model
in float32, driven by 32 asyncio httpx clients for a fixed time per phase. Every response is checked:
embeddings must equal the in-process `encode_documents` of the same text within 1e-5, chats must
finish, answers must report cached tokens > 0. Prints the tables and writes
docs/benchmarks/server_load.md (+ .json).

Phases: (1) embeddings, one short STS-B sentence per request, server with max_batch=1 (each request
its own forward: unbatched) and with max_batch=32, max_wait 5 ms (micro-batched), interleaved twice;
(2) mixed: 70% embeddings, 15% chat (16 tokens), 15% /v1/answer (k=2 XQuAD paragraphs, 16 tokens).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _common import (
    DOCS_BENCH_DIR,
    add_model_option,
    cpu_pressure,
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
import numpy as np  # noqa: E402
import torch  # noqa: E402

from egtlm_core import EgtLM  # noqa: E402
from egtlm_core.evaluation import read_stsb  # noqa: E402
from egtlm_core.server import BackgroundServer, ServerSettings  # noqa: E402

MODEL = "egtlm-default"
F32 = {"torch_dtype": "float32"}
TOLERANCE = 1e-5


@dataclass
class Phase:
    name: str
    latencies: dict[str, list[float]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def add(self, kind: str, latency: float) -> None:
        self.latencies.setdefault(kind, []).append(latency)

    def rows(self) -> list[list[Any]]:
        out = []
        for kind, values in sorted(self.latencies.items()):
            q = statistics.quantiles(values, n=20) if len(values) >= 2 else values * 19
            out.append(
                [
                    self.name,
                    kind,
                    len(values),
                    f"{len(values) / self.seconds:.2f}",
                    f"{statistics.median(values) * 1000:.0f}",
                    f"{q[18] * 1000:.0f}",
                ]
            )
        return out


async def embed_request(client: httpx.AsyncClient, text: str, expected: np.ndarray, phase: Phase) -> None:
    start = time.perf_counter()
    r = await client.post("/v1/embeddings", json={"model": MODEL, "input": text, "encoding_format": "float"})
    latency = time.perf_counter() - start
    if r.status_code != 200:
        phase.errors.append(f"embeddings {r.status_code}: {r.text[:200]}")
        return
    got = np.array(r.json()["data"][0]["embedding"], dtype=np.float32)
    err = float(np.abs(got - expected).max())
    if err > TOLERANCE:
        phase.errors.append(f"embedding differs from in-process by {err:.2e}")
    phase.add("embeddings", latency)


async def chat_request(client: httpx.AsyncClient, question: str, phase: Phase) -> None:
    start = time.perf_counter()
    body = {"model": MODEL, "messages": [{"role": "user", "content": question}], "max_tokens": 16}
    r = await client.post("/v1/chat/completions", json=body)
    latency = time.perf_counter() - start
    ok = r.status_code == 200 and r.json()["choices"][0]["finish_reason"] in ("stop", "length")
    if not ok:
        phase.errors.append(f"chat {r.status_code}: {r.text[:200]}")
        return
    phase.add("chat", latency)


async def answer_request(client: httpx.AsyncClient, question: str, phase: Phase) -> None:
    start = time.perf_counter()
    r = await client.post("/v1/answer", json={"question": question, "k": 2, "max_tokens": 16})
    latency = time.perf_counter() - start
    if r.status_code != 200 or r.json()["usage"]["prompt_tokens_details"]["cached_tokens"] <= 0:
        phase.errors.append(f"answer {r.status_code}: {r.text[:200]}")
        return
    phase.add("answer", latency)


async def drive(url: str, clients: int, seconds: float, phase: Phase, pick: Any) -> Phase:
    """`clients` concurrent loops, each sending `pick(rng)`'s request until time is up."""
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as client:
        stop_at = time.perf_counter() + seconds

        async def loop(seed: int) -> None:
            rng = random.Random(seed)
            while time.perf_counter() < stop_at:
                await pick(rng)(client, phase)

        start = time.perf_counter()
        await asyncio.gather(*(loop(i) for i in range(clients)))
        phase.seconds = time.perf_counter() - start
    return phase


def batch_texts(url: str) -> tuple[float, float]:
    """(texts, forward calls) the server's embedding batcher has run, from its Prometheus metrics
    (`ServerSettings(metrics=True)`: the `egtlm_embedding_batch_texts` histogram's sum and count)."""
    values = {}
    for line in httpx.get(url + "/metrics", timeout=60).text.splitlines():
        name, _, value = line.partition(" ")
        if name in ("egtlm_embedding_batch_texts_sum", "egtlm_embedding_batch_texts_count"):
            values[name.rpartition("_")[2]] = float(value)
    return values["sum"], values["count"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_model_option(ap)
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=15.0, help="per embeddings run (two runs per setting)")
    ap.add_argument("--mixed-seconds", type=float, default=40.0)
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--out", type=Path, default=DOCS_BENCH_DIR, help="folder for the page and JSON")
    args = ap.parse_args(argv)
    model_path = model_name(args)
    torch.set_num_threads(1)
    global F32, TOLERANCE
    F32 = {"torch_dtype": args.dtype}
    TOLERANCE = 1e-5 if args.dtype == "float32" else 2e-2  # bf16: batch composition changes rounding

    lm = EgtLM(model_path, **F32)  # the server's model shares these weights
    sentences = [p.text1 for p in read_stsb("test")][:400]
    paragraphs, questions = zip(*[(text, q.question) for text, q in xquad_paragraphs()[:12]], strict=True)
    expected = {s: v for s, v in zip(sentences, lm.encode_documents(sentences), strict=True)}

    def embed_pick(rng: random.Random) -> Any:
        text = rng.choice(sentences)
        return lambda client, phase: embed_request(client, text, expected[text], phase)

    settings = {
        "unbatched": ServerSettings(
            model=model_path, model_kwargs=F32, served_name=MODEL, max_batch=1, metrics=True
        ),
        "batched": ServerSettings(
            model=model_path, model_kwargs=F32, served_name=MODEL, max_batch=32, max_wait_ms=5, metrics=True
        ),
    }
    embed_phases: dict[str, list[Phase]] = {"unbatched": [], "batched": []}
    batches: dict[str, list[float]] = {"unbatched": [0.0, 0.0], "batched": [0.0, 0.0]}  # texts, calls
    for round_ in range(2):
        for name in ["unbatched", "batched"] if round_ == 0 else ["batched", "unbatched"]:
            with BackgroundServer(settings[name]) as server:
                phase = asyncio.run(drive(server.url, args.clients, args.seconds, Phase(name), embed_pick))
                texts, calls = batch_texts(server.url)
                batches[name] = [batches[name][0] + texts, batches[name][1] + calls]
            embed_phases[name].append(phase)
            print(
                f"{name} round {round_ + 1}: {len(phase.latencies.get('embeddings', []))} requests, "
                f"{len(phase.errors)} errors, {phase.seconds:.1f} s",
                file=sys.stderr,
            )

    mixed_settings = ServerSettings(model=model_path, model_kwargs=F32, served_name=MODEL, max_batch=32)
    with BackgroundServer(mixed_settings) as server:
        httpx.post(
            server.url + "/v1/documents",
            timeout=600,
            json={"documents": [{"id": f"xq{i}", "text": t} for i, t in enumerate(paragraphs)]},
        )

        def mixed_pick(rng: random.Random) -> Any:
            roll = rng.random()
            if roll < 0.70:
                return embed_pick(rng)
            question = rng.choice(questions)
            if roll < 0.85:
                return lambda client, phase: chat_request(client, question, phase)
            return lambda client, phase: answer_request(client, question, phase)

        mixed = asyncio.run(drive(server.url, args.clients, args.mixed_seconds, Phase("mixed"), mixed_pick))
    pressure = cpu_pressure()

    def throughput(name: str) -> list[float]:
        return [len(p.latencies.get("embeddings", [])) / p.seconds for p in embed_phases[name]]

    ratios = [b / u for b, u in zip(throughput("batched"), throughput("unbatched"), strict=True)]
    mean_batch = {name: texts / max(calls, 1.0) for name, (texts, calls) in batches.items()}
    errors = [e for ps in embed_phases.values() for p in ps for e in p.errors] + mixed.errors
    rows = [
        r for name in ("unbatched", "batched") for p in embed_phases[name] for r in p.rows()
    ] + mixed.rows()
    headers = ["phase", "request", "n", "req/s", "p50 ms", "p95 ms"]
    table = markdown_table(headers, rows)
    summary = (
        f"Micro-batched embeddings throughput vs unbatched at {args.clients} clients: "
        f"{statistics.median(ratios):.2f}x (rounds: {', '.join(f'{r:.2f}x' for r in ratios)}); "
        f"mean texts per forward {mean_batch['batched']:.1f} batched, "
        f"{mean_batch['unbatched']:.1f} unbatched. Errors: {len(errors)}."
    )
    print(table)
    print(summary)
    for e in errors[:5]:
        print("error:", e, file=sys.stderr)
    if not args.no_write:
        info = machine_info(("torch", "transformers", "fastapi", "uvicorn", "httpx"))
        info["cpu pressure after the run"] = pressure or "n/a"
        page = PAGE.format(
            clients=args.clients,
            seconds=args.seconds,
            mixed_seconds=args.mixed_seconds,
            table=table,
            summary=summary,
            machine=machine_markdown(info),
            dtype=args.dtype,
            tol=TOLERANCE,
        )
        suffix = "" if args.dtype == "float32" else f"_{args.dtype}"
        write_text(args.out / f"server_load{suffix}.md", page)
        record = {
            "rows": rows,
            "ratios": ratios,
            "errors": errors,
            "machine": info,
            "batch_sizes": mean_batch,
        }
        write_text(args.out / f"server_load{suffix}.json", json.dumps(record, indent=1))
    return 0 if not errors else 1


PAGE = """# `egtlm serve` under load (loopback)

`python benchmarks/server_load.py` (OMP_NUM_THREADS=1): one process, a real uvicorn server in a thread
over the packaged SmolLM2-135M-Instruct in {dtype}, {clients} concurrent asyncio httpx clients per phase.
Every response is checked (embeddings equal in-process `encode_documents` within {tol:g}; chats finish;
answers report cached tokens > 0).

- **embeddings**, {seconds:.0f} s per run, two runs per setting (interleaved): each request one short
  STS-B test sentence. `unbatched` = `--max-batch 1` (every request its own forward), `batched` =
  `--max-batch 32 --max-wait-ms 5`.
- **mixed**, {mixed_seconds:.0f} s: 70% embeddings, 15% chat (16 tokens), 15% `/v1/answer` (k = 2 of 12
  indexed XQuAD paragraphs, 16 tokens). Generations queue for the one CPU generation slot, so chat and
  answer latencies are mostly queueing behind each other.

{table}

{summary}

Clients and server share one process and the machine's cores, so absolute numbers are lower than a
server alone on the machine would give; the batched/unbatched comparison ran under the same load.

## Machine

{machine}
"""


if __name__ == "__main__":
    raise SystemExit(main())
