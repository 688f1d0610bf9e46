"""Indexing on Ray Data: 1 vs 2 actors, and what 1M / 100M passages would cost.

    redis-server --port 6390 --save '' --appendonly no &
    python benchmarks/ray_index_throughput.py --redis redis://127.0.0.1:6390/0     # ~4 minutes on 2 cores

`index_on_ray` (what `egtlm index PATH --ray` runs) over XQuAD's 240 paragraphs on a local Ray cluster
with one CPU per core, with 1 and with 2 actors (one torch thread each; runs interleaved 1, 2, 2, 1,
each under a fresh Redis key prefix so every state is captured again). Timed from the call to the last
batch, actor start-up included, and also from the first batch on (the steady rate a long run sees).
The states each run wrote are measured in Redis (bytes per document and per token), and the page
projects storage and indexing time to 1M and 100M passages of 200 tokens from those measurements.
Writes docs/benchmarks/ray_index_throughput.md (+ .json).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import uuid
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

import redis  # noqa: E402

from egtlm_core import EgtLM  # noqa: E402
from egtlm_core.scale import RayIndexOptions, index_on_ray  # noqa: E402

PASSAGE_TOKENS = 200  # the projection's passage length
SCALES = (1_000_000, 100_000_000)


def run(documents: list[dict[str, Any]], options: RayIndexOptions) -> dict[str, float]:
    """One indexing run -> wall seconds, seconds after the first batch and the documents after it."""
    start = time.perf_counter()
    first_at, first_docs, total = None, 0, 0
    for batch in index_on_ray(documents, options):
        total += len(batch.ids)
        if first_at is None:
            first_at, first_docs = time.perf_counter(), len(batch.ids)
    end = time.perf_counter()
    assert total == len(documents), f"{total} of {len(documents)} documents came back"
    assert first_at is not None
    return {"wall_s": end - start, "steady_s": end - first_at, "steady_docs": total - first_docs}


def take_stored(client: Any, prefix: str) -> tuple[int, int]:
    """(entries, bytes) of the state values under `prefix` in Redis, which are then deleted."""
    keys = list(client.scan_iter(match=prefix + "*", count=1000))
    size = sum(int(client.strlen(k)) for k in keys)
    if keys:
        client.delete(*keys)
    return len(keys), size


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_model_option(ap)
    ap.add_argument("--redis", required=True, metavar="URL", help="where the actors write states")
    ap.add_argument("--docs", type=int, default=240, help="XQuAD paragraphs to index (240: all)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--dtype", default="auto", help="the actors' torch_dtype (auto: what EgtLM() picks)")
    ap.add_argument("--cpus", type=int, default=os.cpu_count() or 2, help="CPUs of the local Ray cluster")
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--out", type=Path, default=DOCS_BENCH_DIR, help="folder for the page and JSON")
    args = ap.parse_args(argv)
    import ray

    model_path = model_name(args)
    paragraphs = [text for text, _ in xquad_paragraphs()][: args.docs]
    documents = [{"id": f"xq{i}", "text": t} for i, t in enumerate(paragraphs)]
    lm = EgtLM(model_path, torch_dtype=args.dtype)
    tokens = sum(len(ids) for ids in lm.tokenizer(paragraphs, add_special_tokens=False)["input_ids"])
    dtype, dim = str(lm.dtype).removeprefix("torch."), lm.embedding_dim
    del lm  # the actors load their own
    client = redis.Redis.from_url(args.redis)
    env = {"OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": env})
    runs: dict[int, list[dict[str, float]]] = {1: [], 2: []}
    sizes: list[tuple[int, int]] = []
    try:
        for actors in (1, 2, 2, 1):
            prefix = f"egtlm:bench:{uuid.uuid4().hex[:8]}:"
            options = RayIndexOptions(
                model=model_path, settings={"torch_dtype": args.dtype}, redis_url=args.redis,
                redis_prefix=prefix, actors=actors, batch_size=args.batch_size,
            )  # fmt: skip
            got = run(documents, options)
            runs[actors].append(got)
            sizes.append(take_stored(client, prefix))
            print(
                f"{actors} actor(s): {got['wall_s']:.1f} s, {len(documents) / got['wall_s']:.2f} docs/s",
                file=sys.stderr,
            )
    finally:
        ray.shutdown()

    def rates(actors: int, key: str, docs_key: str | None = None) -> list[float]:
        return [(r[docs_key] if docs_key else len(documents)) / r[key] for r in runs[actors]]

    wall = {a: rates(a, "wall_s") for a in (1, 2)}
    steady = {a: rates(a, "steady_s", "steady_docs") for a in (1, 2)}
    ratio_wall = [two / one for one, two in zip(wall[1], wall[2], strict=True)]
    ratio_steady = [two / one for one, two in zip(steady[1], steady[2], strict=True)]
    entries, state_bytes = sizes[0]
    per_doc = state_bytes / max(entries - 1, 1)  # one entry is the RAG head every document follows
    per_token = state_bytes / tokens
    rows = [
        [f"{a} actor{'s' if a > 1 else ''}", f"{statistics.median(wall[a]):.2f}",
         f"{statistics.median(steady[a]):.2f}", ", ".join(f"{r['wall_s']:.1f}" for r in runs[a])]
        for a in (1, 2)
    ]  # fmt: skip
    table = markdown_table(
        ["actors", "docs/s (wall)", "docs/s (after the first batch)", "wall s per run"], rows
    )
    steady_one = statistics.median(steady[1])
    projection = []
    for n in SCALES:
        states_tb = n * PASSAGE_TOKENS * per_token / 1e12
        vectors_gb = n * dim * 4 / 1e9
        hours = {a: n / (steady_one * a) / 3600 for a in (2, 16, 64)}
        projection.append(
            [f"{n:,}", f"{states_tb:.2f} TB", f"{states_tb / 2:.2f} TB", f"{vectors_gb:.1f} GB",
             *(f"{h:,.0f} h" for h in hours.values())]
        )  # fmt: skip
    projection_table = markdown_table(
        ["passages (200 tokens)", f"states ({dtype}, measured)", "states (int8, ~half)", "vectors (fp32)",
         "2 actors", "16 actors", "64 actors"],
        projection,
    )  # fmt: skip
    summary = (
        f"2 actors vs 1: {statistics.median(ratio_wall):.2f}x wall "
        f"(runs {', '.join(f'{x:.2f}x' for x in ratio_wall)}), "
        f"{statistics.median(ratio_steady):.2f}x after the first batch. States: {per_doc / 1e6:.2f} MB per "
        f"document, {per_token / 1e3:.1f} KB per token ({entries} entries, {tokens} tokens, {dtype})."
    )  # fmt: skip
    print(table)
    print(projection_table)
    print(summary)
    if not args.no_write:
        info = machine_info(("torch", "transformers", "ray", "redis"))
        page = PAGE.format(
            docs=len(documents), tokens=tokens, cpus=args.cpus, batch=args.batch_size, dtype=dtype,
            table=table, summary=summary, projection=projection_table, per_doc=steady_one,
            machine=machine_markdown(info),
        )  # fmt: skip
        write_text(args.out / "ray_index_throughput.md", page)
        record = {"runs": runs, "ratio_wall": ratio_wall, "ratio_steady": ratio_steady, "entries": entries,
                  "state_bytes": state_bytes, "tokens": tokens, "dtype": dtype, "machine": info}  # fmt: skip
        write_text(args.out / "ray_index_throughput.json", json.dumps(record, indent=1))
    return 0


PAGE = """# Indexing on Ray Data: 1 vs 2 actors, and the projection to 1M / 100M passages

`python benchmarks/ray_index_throughput.py --redis URL`: `index_on_ray` (what `egtlm index PATH --ray`
runs) over {docs} XQuAD paragraphs ({tokens} tokens) on a local Ray cluster of {cpus} CPUs; each actor
one `EgtLM` ({dtype}, one torch thread), {batch} documents per call, embedding and capturing in one
forward, states written to Redis. Runs interleaved 1, 2, 2, 1 actors, each under a fresh key prefix.

{table}

{summary}

## Projection

From the measured state bytes per token and the measured steady rate of one actor
({per_doc:.2f} passages/s on XQuAD paragraphs, ~150 tokens each; 200-token passages are slower),
assuming actors scale linearly across machines (each actor holds its own model and writes to the
shared tier; nothing is shared between actors but Redis):

{projection}

What it says: at this model size the states, not the vectors, are the storage problem — a million
passages need terabytes of Redis (or an object-store tier behind it, see guide_scale_out.md), and
the states of rarely retrieved passages are better recomputed on first use than stored. Indexing
time divides by the number of actors; a GPU actor would index far faster than these CPU actors.

## Machine

{machine}
"""


if __name__ == "__main__":
    raise SystemExit(main())
