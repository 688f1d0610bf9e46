"""Time to first token: shared-cache reuse vs full prefill, k = 1, 3, 5, 10 XQuAD paragraphs.

The same prompt (chat header + k paragraphs of ~300 tokens + a question) is answered with
`max_new_tokens=1` four ways, interleaved in one process (the order rotates every repeat; medians
reported). Each way is an `EgtLM` over the same shared weights with its own `cache_store`:

    full   `answer(..., reuse_cache=False)`: the whole prompt is prefilled by `generate`
    warm   reuse, states in a RAM tier (`MemoryTier`)
    disk   reuse, states read from a fresh `DiskTier` (safetensors files written at indexing)
    int8   reuse, states read from a fresh `DiskTier(int8=True)` (dequantised on load)

Reuse here splices every stored token (`recompute_tokens=0`): this page times the splice path.
The default, `RECOMPUTE_TOKENS` = 32, adds 32 live tokens per spliced paragraph after the first to
the same one forward (its latency and answers: benchmarks/langchain_rag.py).

The **floor** is each warm answer's own live forward (`result.reuse.forward_s`: the separators and
the question over the spliced cache, in one forward). The reuse path can never beat it; warm / floor
(the median of each answer's time over its own forward) says how much the rest (fetch, re-rotation,
splicing, planning, decode set-up) adds. Also: where the reuse time goes at the largest k (the
answers' `ReuseStats` timings), load cost and bytes per token of each tier, and indexing time with
batched capture (`document_cache.capture(documents)`) vs one capture call per document.

    python benchmarks/rag_ttft.py --threads 1                  # auto dtype, then float32
    python benchmarks/rag_ttft.py --dtypes auto --repeats 5 --threads 1

Writes docs/benchmarks/rag_ttft.md and rag_ttft.png.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from _common import cpu_flags_of_interest, cpu_times, machine_facts, med, median_ms, xquad_paragraphs  # noqa: E402
from rag_ttft_page import CONDITIONS, page, plot  # noqa: E402  (the page's prose and plot, apart from the measurement)

from egtlm_core import DiskTier, EgtLM, MemoryTier  # noqa: E402

DOCS_DIR = ROOT / "docs" / "benchmarks"
TARGET_RATIO, TARGET_K, TARGET_FLOOR = 10.0, 5, 1.3
PARTS = ("fetch", "splice", "forward", "rest", "total")  # of a reuse answer's wall time
RUN_SETTINGS = ("model", "ks", "dtypes", "repeats", "threads", "target_tokens")  # saved for --render


# --- the measurement -------------------------------------------------------------------------------
def make_models(model: str | None, dtype: str, docs: list[str], tmp: Path) -> tuple[dict[str, EgtLM], dict]:
    """One `EgtLM` per way (shared weights, each its own store) and the reuse ways' tiers."""
    tiers: dict[str, Any] = {"warm": MemoryTier(max_bytes=4 << 30)}
    warm = EgtLM(model, torch_dtype=dtype, cache_store=tiers["warm"])
    warm.document_cache.capture(docs)
    for name, int8 in (("disk", False), ("int8", True)):
        EgtLM(model, torch_dtype=dtype, cache_store=DiskTier(tmp / name, int8=int8)).document_cache.capture(
            docs
        )
    # Fresh tiers over the written files: nothing of the indexing run is held in this process
    # (the OS page cache still holds the files: read + checksum + decode, not a disk seek).
    tiers["disk"], tiers["int8"] = DiskTier(tmp / "disk"), DiskTier(tmp / "int8", int8=True)
    models = {"full": warm, "warm": warm}
    models.update({c: EgtLM(model, torch_dtype=dtype, cache_store=tiers[c]) for c in ("disk", "int8")})
    return models, tiers


def parts_ms(wall_s: float, reuse: Any) -> dict[str, float]:
    """A reuse answer's wall time split by its own `ReuseStats` timings, in ms."""
    parts = {"fetch": reuse.fetch_s, "splice": reuse.splice_s, "forward": reuse.forward_s}
    parts["rest"] = wall_s - sum(parts.values())
    parts["total"] = wall_s
    return {name: 1e3 * seconds for name, seconds in parts.items()}


def measure(models: dict[str, EgtLM], question: str, docs: list[str], args: Any) -> dict:
    def once(cond: str, k: int) -> tuple[float, Any]:
        start = time.perf_counter()
        r = models[cond].answer(
            question, documents=docs[:k], reuse_cache=cond != "full", max_new_tokens=1, recompute_tokens=0
        )
        return time.perf_counter() - start, r

    for k in args.ks:  # warm-up: first calls pay for kernel selection and allocation
        for cond in CONDITIONS:
            once(cond, k)
    wall: dict[str, list[float]] = defaultdict(list)
    parts: dict[str, list[dict[str, float]]] = defaultdict(list)
    first: dict[str, str] = {}
    tokens: dict[int, dict[str, int]] = {}
    for rep in range(args.repeats):
        for k in args.ks:
            turn = rep % len(CONDITIONS)
            for cond in CONDITIONS[turn:] + CONDITIONS[:turn]:  # rotate: no condition always first
                w, r = once(cond, k)
                wall[f"{cond}@{k}"].append(w)
                first[f"{cond}@{k}"] = r.text
                if cond != "full":
                    parts[f"{cond}@{k}"].append(parts_ms(w, r.reuse))
                if cond == "warm":
                    tokens[k] = {"prompt": r.prompt_tokens, "live": r.reuse.prefilled_tokens}
        print(f"  repeat {rep + 1}/{args.repeats} (load {os.getloadavg()[0]:.1f})", flush=True)
    wall_ms = {key: median_ms(v) for key, v in wall.items()}
    for k in args.ks:  # the floor: the warm answers' own live forwards
        wall_ms[f"floor@{k}"] = med(p["forward"] for p in parts[f"warm@{k}"])
    kmax = max(args.ks)
    return {
        "wall_ms": wall_ms,
        "wall_all_ms": {key: [x * 1e3 for x in v] for key, v in wall.items()},
        "tokens": tokens,
        "warm_over_floor": {
            str(k): med(p["total"] / p["forward"] for p in parts[f"warm@{k}"]) for k in args.ks
        },
        "breakdown": {
            cond: {name: statistics.mean(p[name] for p in parts[f"{cond}@{kmax}"]) for name in PARTS}
            for cond in ("warm", "int8")
        },
        "first_token_same_as_full": {
            key: text == first[f"full@{key.split('@')[1]}"] for key, text in first.items()
        },
    }


def storage(
    models: dict[str, EgtLM], tiers: dict[str, Any], docs: list[str], repeats: int
) -> tuple[dict, list[int]]:
    """Load time per document and bytes per token of each tier (each store's own keys: the storage
    format, native or int8, is part of a key); -> that, and each document's tokens."""
    keys = {c: models[c].document_cache.capture(docs) for c in tiers}  # all stored: just their keys
    tokens = [tiers["warm"].get(key).num_tokens for key in keys["warm"]]
    loads: dict[str, list[float]] = defaultdict(list)
    for _ in range(repeats):
        for cond, tier in tiers.items():
            for key in keys[cond]:
                start = time.perf_counter()
                tier.get(key)
                loads[cond].append(time.perf_counter() - start)
    out = {}
    for cond, tier in tiers.items():
        if cond == "warm":
            sizes = [tier.get(key).nbytes for key in keys[cond]]
        else:
            sizes = [tier.path_for(key).stat().st_size for key in keys[cond]]
        out[cond] = {
            "bytes_per_token_docs": statistics.mean(s / n for s, n in zip(sizes, tokens, strict=True)),
            "load_ms_per_doc": median_ms(loads[cond]),
        }
    return out, tokens


def indexing(model: str | None, dtype: str, docs: list[str], rounds: int = 2) -> dict[str, float]:
    """Seconds to capture all documents into a fresh store: one batched `capture(docs)` call vs one
    `capture([doc])` call per document (one forward each)."""
    times: dict[str, list[float]] = defaultdict(list)
    for _ in range(rounds):
        for way in ("batched", "one per document"):
            cache = EgtLM(model, torch_dtype=dtype, cache_store=MemoryTier(max_bytes=4 << 30)).document_cache
            start = time.perf_counter()
            for batch in [docs] if way == "batched" else [[doc] for doc in docs]:
                cache.capture(batch)
            times[way].append(time.perf_counter() - start)
    return {way: statistics.median(v) for way, v in times.items()}


def run_dtype(dtype: str, docs: list[str], question: str, args: Any) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="egtlm-ttft-"))
    try:
        models, tiers = make_models(args.model, dtype, docs, tmp)
        res = measure(models, question, docs, args)
        res["storage"], res["doc_tokens"] = storage(models, tiers, docs, max(5, args.repeats))
        res["indexing_s"] = indexing(args.model, dtype, docs)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    res.update(dtype=str(models["warm"].dtype).removeprefix("torch."), requested=dtype)
    return res


# --- output ------------------------------------------------------------------------------------------
def table(res: dict[str, Any], ks: list[int]) -> str:
    w = res["wall_ms"]
    lines = [
        "| k | prompt tokens | live tokens | full prefill ms | warm ms | disk ms | int8 ms | floor ms "
        "| full/warm | full/disk | full/int8 | warm/floor |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for k in ks:
        f, r, t = w[f"full@{k}"], w[f"warm@{k}"], res["tokens"][k]
        lines.append(
            f"| {k} | {t['prompt']} | {t['live']} | {f:.0f} | {r:.0f} | {w[f'disk@{k}']:.0f} "
            f"| {w[f'int8@{k}']:.0f} | {w[f'floor@{k}']:.0f} | **{f / r:.1f}×** | {f / w[f'disk@{k}']:.1f}× "
            f"| {f / w[f'int8@{k}']:.1f}× | **{res['warm_over_floor'][str(k)]:.2f}** |"
        )
    return "\n".join(lines)


PART_NAMES = {
    "fetch": "fetch: store lookups (`ReuseStats.fetch_s`)",
    "splice": "splice: re-rotate + copy into one cache (`splice_s`)",
    "forward": "the one live forward: separators + question (`forward_s`)",
    "rest": "rest: planning, cache set-up, first token, result",
    "total": "total (wall time of the answer)",
}


def small_tables(res: dict[str, Any]) -> str:
    b = res["breakdown"]
    lines = ["| part | warm ms | int8 disk ms |", "|---|---|---|"]
    lines += [f"| {PART_NAMES[p]} | {b['warm'][p]:.1f} | {b['int8'][p]:.1f} |" for p in PARTS]
    names = {"warm": "RAM tier (native)", "disk": "disk tier (native)", "int8": "disk tier (int8)"}
    lines += ["", "| tier | load ms / document | bytes / token |", "|---|---|---|"]
    lines += [
        f"| {names[c]} | {s['load_ms_per_doc']:.2f} | {s['bytes_per_token_docs']:,.0f} |"
        for c, s in res["storage"].items()
    ]
    ix = res["indexing_s"]
    lines += [
        "",
        f"Indexing the {len(res['doc_tokens'])} paragraphs' states: batched "
        f"{ix['batched']:.2f} s, one forward per document {ix['one per document']:.2f} s "
        f"({ix['one per document'] / ix['batched']:.2f}×).",
    ]
    return "\n".join(lines)


def verdicts(res: dict[str, Any], ks: list[int]) -> tuple[float, float, str]:
    w = res["wall_ms"]
    k = TARGET_K if TARGET_K in ks else max(ks)
    ratio, floor = w[f"full@{k}"] / w[f"warm@{k}"], max(res["warm_over_floor"][str(j)] for j in ks)
    ok = ratio >= TARGET_RATIO, floor <= TARGET_FLOOR
    text = (
        f"Targets: ≥ {TARGET_RATIO:.0f}× at k = {k} warm — **{'met' if ok[0] else 'not met'}** "
        f"({ratio:.1f}×); reuse ≤ {TARGET_FLOOR}× its own live forward at every k — "
        f"**{'met' if ok[1] else 'not met'}** (worst k: {floor:.2f}×)."
    )
    return ratio, floor, text


def write_markdown(results: list[dict[str, Any]], info: dict[str, Any], args: Any, path: Path) -> str:
    text = page(results, info, args, table, small_tables, verdicts)
    path.write_text(text, encoding="utf-8")
    k = TARGET_K if TARGET_K in args.ks else max(args.ks)
    return "; ".join(
        f"{r['dtype']}: {v[0]:.1f}× at k={k}, worst warm/floor {v[1]:.2f}"
        for r in results
        for v in [verdicts(r, args.ks)]
    )


def load_report(start: tuple[int, int] | None, own_cpu_s: float, wall_s: float) -> dict[str, Any]:
    """How busy the machine was during the run: all CPUs' busy share and the part other jobs took."""
    end = cpu_times()
    cores = os.cpu_count() or 1
    if start is None or end is None or end[1] == start[1]:
        return {"cores": cores}
    busy_cores = (end[0] - start[0]) / (end[1] - start[1]) * cores
    own = own_cpu_s / wall_s if wall_s else 0.0
    return {
        "cores": cores,
        "busy_cores": busy_cores,
        "own_cores": own,
        "others_cores": max(0.0, busy_cores - own),
    }


def pick_documents(model: str | None, data: Path | None, n: int, target_tokens: int) -> tuple[list[str], str]:
    """The `n` XQuAD paragraphs closest to `target_tokens` tokens and the first one's first question."""
    paragraphs = xquad_paragraphs(data)
    tok = EgtLM(model).tokenizer
    lengths = [len(tok(text, add_special_tokens=False)["input_ids"]) for text, _ in paragraphs]
    chosen = sorted(range(len(paragraphs)), key=lambda i: abs(lengths[i] - target_tokens))[:n]
    print(f"paragraph tokens: {[lengths[i] for i in chosen]}")
    return [paragraphs[i][0] for i in chosen], paragraphs[chosen[0]][1].question


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default=None, help="model name or path (default: the packaged one)")
    parser.add_argument("--data", type=Path, default=None, help="xquad.en.json (default: the shared data)")
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 3, 5, 10])
    parser.add_argument("--dtypes", nargs="+", default=["auto", "float32"])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--target-tokens", type=int, default=300)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--out", type=Path, default=DOCS_DIR)
    parser.add_argument("--json", type=Path, default=None, help="also write the raw results here")
    parser.add_argument("--render", type=Path, default=None, help="only re-write the page from a --json file")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.render:
        saved = json.loads(args.render.read_text())
        vars(args).update(saved.get("args", {}))  # the run's own settings, named on the page
        for res in saved["results"]:
            res["tokens"] = {int(k): v for k, v in res["tokens"].items()}
        plot(saved["results"], args.ks, args.out / "rag_ttft.png")
        print(write_markdown(saved["results"], saved["machine"], args, args.out / "rag_ttft.md"))
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    info = machine_facts(torch.get_num_threads())
    info["flags"] = cpu_flags_of_interest()
    print(f"CPU: {info['cpu']}; flags: {' '.join(info['flags']) or 'n/a'}; threads: {info['torch_threads']}")
    docs, question = pick_documents(args.model, args.data, max(args.ks), args.target_tokens)
    print(f"question: {question!r}")

    cpu_start, wall_start, own_start = cpu_times(), time.perf_counter(), time.process_time()
    results = []
    for dtype in args.dtypes:
        res = run_dtype(dtype, docs, question, args)
        results.append(res)
        print(f"\n{res['dtype']}:\n{table(res, args.ks)}\n{small_tables(res)}\n{verdicts(res, args.ks)[2]}")
    info["load_after"] = os.getloadavg()
    info["load"] = load_report(cpu_start, time.process_time() - own_start, time.perf_counter() - wall_start)
    args.out.mkdir(parents=True, exist_ok=True)
    plot(results, args.ks, args.out / "rag_ttft.png")
    verdict = write_markdown(results, info, args, args.out / "rag_ttft.md")
    if args.json:
        settings = {name: getattr(args, name) for name in RUN_SETTINGS}
        args.json.write_text(json.dumps({"machine": info, "args": settings, "results": results}, indent=1))
    print(f"\n{verdict}. Wrote {args.out / 'rag_ttft.md'}")


if __name__ == "__main__":
    main()
