"""Time to first token: shared-cache reuse vs full prefill, k = 1, 3, 5, 10 XQuAD paragraphs.

The same prompt (chat header + k paragraphs of ~300 tokens + a question) is answered with
`max_new_tokens=1` four ways, interleaved in one process (the order rotates every repeat; medians
reported):

    full   `answer(..., reuse_cache=False)`: the whole prompt is prefilled by `generate`
    warm   reuse, states in a RAM tier (`MemoryTier`)
    disk   reuse, states read from a fresh `DiskTier` (safetensors files written at indexing)
    int8   reuse, states read from a fresh `DiskTier(int8=True)` (dequantised on load)

Reuse here splices every stored token (`recompute_tokens=0`): this page times the splice path.
The default, `RECOMPUTE_TOKENS` = 32, adds 32 live tokens per spliced paragraph after the first to
the same one forward (its latency and answers: benchmarks/langchain_rag.py).

and one more measurement, the **floor**: one bare forward of the same live tokens (separators and
question) over the same spliced cache, timed alone (`KVReuser._forward_live` after `_gather`). The
reuse path can never beat it; warm / floor says how much the rest (fetch, re-rotation, splicing,
planning, decode set-up) adds. Also: where the reuse time goes at the largest k, load cost and bytes
per token of each tier, and indexing time with batched vs one-forward-per-document capture.

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
from _common import _cpu_times, cpu_flags_of_interest, machine_facts  # noqa: E402
from rag_ttft_page import CONDITIONS, page, plot  # noqa: E402  (the page's prose and plot, apart from the measurement)

from egtlm_core import EgtLM  # noqa: E402
from egtlm_core.cache import DiskTier, MemoryTier  # noqa: E402
from egtlm_core.rag.engine import SharedCacheRAG  # noqa: E402
from egtlm_core.rag.kv_reuse import ReuseStats  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "xquad" / "xquad.en.json"
DOCS_DIR = ROOT / "docs" / "benchmarks"
TARGET_RATIO, TARGET_K, TARGET_FLOOR = 10.0, 5, 1.3


def xquad_paragraphs(path: Path) -> list[dict[str, Any]]:
    data = json.loads(path.read_text(encoding="utf-8"))
    return [p for article in data["data"] for p in article["paragraphs"]]


def median_ms(xs: list[float]) -> float:
    return statistics.median(xs) * 1e3


class Timer:
    """Wraps methods of an object to sum the time spent in them (for the breakdown)."""

    def __init__(self, obj: Any, names: list[str]):
        self.obj, self.totals = obj, defaultdict(float)
        self.originals = {n: getattr(obj, n) for n in names}
        for name, fn in self.originals.items():
            setattr(obj, name, self._wrap(name, fn))

    def _wrap(self, name: str, fn: Any) -> Any:
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.totals[name] += time.perf_counter() - start

        return timed

    def restore(self) -> None:
        for name in self.originals:
            delattr(self.obj, name)  # the instance attribute shadowed the class method


class LiveForwardClock:
    """Times the one live forward inside an answer (wall and this thread's CPU time)."""

    def __init__(self, reuser: Any):
        self.reuser, self.wall, self.cpu = reuser, 0.0, 0.0
        forward = reuser._forward_live

        def timed(*args: Any, **kwargs: Any) -> Any:
            start, cpu = time.perf_counter(), time.thread_time()
            try:
                return forward(*args, **kwargs)
            finally:
                self.wall += time.perf_counter() - start
                self.cpu += time.thread_time() - cpu

        reuser._forward_live = timed

    def restore(self) -> None:
        del self.reuser._forward_live


# --- the measurement -------------------------------------------------------------------------------
def make_engines(m: EgtLM, plan: Any, tmp: Path) -> dict[str, SharedCacheRAG]:
    warm = SharedCacheRAG(m._loaded, m, store=MemoryTier(max_bytes=4 << 30))
    warm.reuser.index(plan.documents, plan.prefix, show_progress=False)
    for name, int8 in (("disk", False), ("int8", True)):
        writer = SharedCacheRAG(m._loaded, m, store=DiskTier(tmp / name, int8=int8))
        writer.reuser.index(plan.documents, plan.prefix, show_progress=False)
    # Fresh tiers over the written files: nothing of the indexing run is held in this process
    # (the OS page cache still holds the files: read + checksum + decode, not a disk seek).
    return {
        "warm": warm,
        "disk": SharedCacheRAG(m._loaded, m, store=DiskTier(tmp / "disk")),
        "int8": SharedCacheRAG(m._loaded, m, store=DiskTier(tmp / "int8", int8=True)),
    }


def floor_once(engine: SharedCacheRAG, m: EgtLM, question: str, docs: list[str]) -> float:
    """One bare forward of the plan's live tokens over its spliced cache (the splice is not timed)."""
    plan = engine.plan(question, docs)
    reuser = engine.reuser
    cache, cached, ids, positions, _ = reuser._gather(plan, 0, ())
    tail = plan.segments[-1].token_ids
    at = len(plan.token_ids) - len(tail)
    ids, positions = ids + list(tail), positions + list(range(at, at + len(tail)))
    start = time.perf_counter()
    reuser._forward_live(ids, positions, cache, cached, m.model)
    return time.perf_counter() - start


def measure(m: EgtLM, engines: dict[str, SharedCacheRAG], question: str, docs: list[str], args: Any) -> dict:
    paired: dict[int, list[tuple[float, float]]] = defaultdict(list)  # per warm call: wall, CPU ratio

    def once(cond: str, k: int) -> tuple[float, Any]:
        engine = engines["warm" if cond in ("full", "floor") else cond]
        if cond == "floor":
            return floor_once(engine, m, question, docs[:k]), None
        inner = LiveForwardClock(engine.reuser) if cond == "warm" else None
        start, cpu = time.perf_counter(), time.thread_time()
        r = engine.answer(
            question, documents=docs[:k], reuse_cache=cond != "full", max_new_tokens=1, recompute_tokens=0
        )
        wall_s, cpu_s = time.perf_counter() - start, time.thread_time() - cpu
        if inner is not None:  # the same call's own forward: a floor paired with its answer
            inner.restore()
            paired[k].append((wall_s / inner.wall, cpu_s / inner.cpu))
        return wall_s, r

    for k in args.ks:  # warm-up: first calls pay for kernel selection and allocation
        for cond in CONDITIONS:
            once(cond, k)
    paired.clear()
    wall: dict[str, list[float]] = defaultdict(list)
    first: dict[str, str] = {}
    tokens: dict[int, dict[str, int]] = {}
    for rep in range(args.repeats):
        for k in args.ks:
            turn = rep % len(CONDITIONS)
            order = CONDITIONS[turn:] + CONDITIONS[:turn]  # rotate: no condition always first
            for cond in order:
                w, r = once(cond, k)
                wall[f"{cond}@{k}"].append(w)
                if r is not None:
                    first[f"{cond}@{k}"] = r.text
                    if cond == "warm":
                        tokens[k] = {"prompt": r.prompt_tokens, "live": r.reuse.prefilled_tokens}
        print(f"  repeat {rep + 1}/{args.repeats} (load {os.getloadavg()[0]:.1f})", flush=True)
    return {
        "wall_ms": {key: median_ms(v) for key, v in wall.items()},
        "wall_all_ms": {key: [x * 1e3 for x in v] for key, v in wall.items()},
        "tokens": tokens,
        "in_call_ratio": {
            str(k): {
                "wall": statistics.median(w for w, _ in v),
                "cpu": statistics.median(c for _, c in v),
            }
            for k, v in paired.items()
        },
        "first_token_same_as_full": {
            key: text == first[f"full@{key.split('@')[1]}"] for key, text in first.items()
        },
    }


def breakdown(engines: dict[str, SharedCacheRAG], question: str, docs: list[str], n: int) -> dict:
    """Mean ms per part of a reuse answer at the largest k (a separate pass with timers)."""
    out = {}
    parts = ["states", "_stored_part", "_splice_parts", "_forward_live", "_gather", "prefill"]
    for cond in ("warm", "int8"):
        engine = engines[cond]
        timer = Timer(engine.reuser, parts)
        walls = []
        for _ in range(n):
            start = time.perf_counter()
            engine.answer(question, documents=docs, max_new_tokens=1, recompute_tokens=0)
            walls.append(time.perf_counter() - start)
        timer.restore()
        t = {name: v / n * 1e3 for name, v in timer.totals.items()}
        total = statistics.mean(walls) * 1e3
        out[cond] = {
            "store get (states)": t["states"],
            "re-rotate + copy into the cache (_stored_part)": t["_stored_part"],
            "cache buffers + DynamicCache (rest of _splice_parts)": t["_splice_parts"] - t["_stored_part"],
            "other splice bookkeeping (rest of _gather)": t["_gather"] - t["_splice_parts"] - t["states"],
            "the one live forward (separators + question)": t["_forward_live"],
            "planning, first token, result (rest of answer)": total - t["prefill"],
            "total": total,
        }
    return out


def storage(engines: dict[str, SharedCacheRAG], plan: Any, repeats: int) -> dict:
    tokens = [len(s.token_ids) for s in plan.documents]
    # each store's own keys: the storage format (native / int8) is part of a key
    keys = {
        c: [engines[c].reuser.key(s, plan.prefix) for s in plan.documents] for c in ("warm", "disk", "int8")
    }
    loads: dict[str, list[float]] = defaultdict(list)
    for _ in range(repeats):
        for cond in keys:
            for key in keys[cond]:
                start = time.perf_counter()
                engines[cond].store.get(key)
                loads[cond].append(time.perf_counter() - start)
    out = {}
    for cond in keys:
        store = engines[cond].store
        if cond == "warm":
            sizes = [store.get(key).nbytes for key in keys[cond]]
        else:
            sizes = [store.path_for(key).stat().st_size for key in keys[cond]]
        out[cond] = {
            "bytes_per_token_docs": statistics.mean(s / n for s, n in zip(sizes, tokens, strict=True)),
            "load_ms_per_doc": median_ms(loads[cond]),
        }
    return out


def indexing(m: EgtLM, plan: Any, rounds: int = 2) -> dict[str, float]:
    """Seconds to capture all documents: batched (`index`) vs one forward per document."""
    times: dict[str, list[float]] = defaultdict(list)
    for _ in range(rounds):
        for way in ("batched", "one per document"):
            engine = SharedCacheRAG(m._loaded, m, store=MemoryTier(max_bytes=4 << 30))
            reuser = engine.reuser
            prefix_cache = reuser._prefix_loader(plan.prefix, ReuseStats())()
            start = time.perf_counter()
            if way == "batched":
                reuser.index(plan.documents, plan.prefix, show_progress=False)
            else:
                for doc in plan.documents:
                    reuser.store.put(reuser.key(doc, plan.prefix), reuser.capture_segment(doc, prefix_cache))
            times[way].append(time.perf_counter() - start)
    return {way: statistics.median(v) for way, v in times.items()}


def run_dtype(dtype: str, docs: list[str], question: str, args: Any) -> dict[str, Any]:
    m = EgtLM(torch_dtype=dtype)
    tmp = Path(tempfile.mkdtemp(prefix="egtlm-ttft-"))
    plan = SharedCacheRAG(m._loaded, m, store=MemoryTier()).plan("?", docs)
    engines = make_engines(m, plan, tmp)
    res = measure(m, engines, question, docs, args)
    res["breakdown"] = breakdown(engines, question, docs[: max(args.ks)], max(3, args.repeats // 2))
    res["storage"] = storage(engines, plan, max(5, args.repeats))
    res["indexing_s"] = indexing(m, plan)
    shutil.rmtree(tmp, ignore_errors=True)
    res.update(dtype=str(m.dtype).removeprefix("torch."), requested=dtype)
    res["doc_tokens"] = [len(s.token_ids) for s in plan.documents]
    return res


# --- output ------------------------------------------------------------------------------------------
def table(res: dict[str, Any], ks: list[int]) -> str:
    w = res["wall_ms"]
    lines = [
        "| k | prompt tokens | live tokens | full prefill ms | warm ms | disk ms | int8 ms | floor ms "
        "| full/warm | full/disk | full/int8 | warm/floor | in-call wall | in-call CPU |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for k in ks:
        f, r, fl = w[f"full@{k}"], w[f"warm@{k}"], w[f"floor@{k}"]
        t, paired = res["tokens"][k], res["in_call_ratio"][str(k)]
        lines.append(
            f"| {k} | {t['prompt']} | {t['live']} | {f:.0f} | {r:.0f} | {w[f'disk@{k}']:.0f} "
            f"| {w[f'int8@{k}']:.0f} | {fl:.0f} | **{f / r:.1f}×** | {f / w[f'disk@{k}']:.1f}× "
            f"| {f / w[f'int8@{k}']:.1f}× | **{r / fl:.2f}** | {paired['wall']:.2f} | {paired['cpu']:.2f} |"
        )
    return "\n".join(lines)


def small_tables(res: dict[str, Any]) -> str:
    b = res["breakdown"]
    lines = ["| part | warm ms | int8 disk ms |", "|---|---|---|"]
    lines += [f"| {row} | {b['warm'][row]:.1f} | {b['int8'][row]:.1f} |" for row in b["warm"]]
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
    ratio, floor = w[f"full@{k}"] / w[f"warm@{k}"], max(w[f"warm@{j}"] / w[f"floor@{j}"] for j in ks)
    ok = ratio >= TARGET_RATIO, floor <= TARGET_FLOOR
    paired = res.get("in_call_ratio", {})
    wall_in = max((v["wall"] for v in paired.values()), default=float("nan"))
    cpu_in = max((v["cpu"] for v in paired.values()), default=float("nan"))
    text = (
        f"Targets: ≥ {TARGET_RATIO:.0f}× at k = {k} warm — **{'met' if ok[0] else 'not met'}** "
        f"({ratio:.1f}×); reuse ≤ {TARGET_FLOOR}× the floor at every k — "
        f"**{'met' if ok[1] else 'not met'}** by the separately timed floor (worst median ratio "
        f"{floor:.2f}×); paired with each answer's own forward the worst k gives {wall_in:.2f}× in wall "
        f"time and {cpu_in:.2f}× in this thread's CPU time."
    )
    return ratio, floor, text


def write_markdown(results: list[dict[str, Any]], info: dict[str, Any], args: Any, path: Path) -> str:
    text = page(results, info, args, table, small_tables, verdicts)
    path.write_text(text, encoding="utf-8")
    return "; ".join(
        f"{r['dtype']}: {v[0]:.1f}× at k={TARGET_K}, worst warm/floor {v[1]:.2f}"
        for r in results
        for v in [verdicts(r, args.ks)]
    )


def load_report(start: tuple[int, int] | None, own_cpu_s: float, wall_s: float) -> dict[str, Any]:
    """How busy the machine was during the run: all CPUs' busy share and the part other jobs took."""
    end = _cpu_times()
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


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 3, 5, 10])
    parser.add_argument("--dtypes", nargs="+", default=["auto", "float32"])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--target-tokens", type=int, default=300)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--out", type=Path, default=DOCS_DIR)
    parser.add_argument("--json", type=Path, default=None, help="also write the raw results here")
    parser.add_argument("--render", type=Path, default=None, help="only re-write the page from a --json file")
    args = parser.parse_args()
    if args.render:
        saved = json.loads(args.render.read_text())
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

    paragraphs = xquad_paragraphs(args.data)
    tok = EgtLM().tokenizer
    lengths = [len(tok(p["context"], add_special_tokens=False)["input_ids"]) for p in paragraphs]
    chosen = sorted(range(len(paragraphs)), key=lambda i: abs(lengths[i] - args.target_tokens))[
        : max(args.ks)
    ]
    docs = [paragraphs[i]["context"] for i in chosen]
    question = paragraphs[chosen[0]]["qas"][0]["question"]
    print(f"paragraph tokens: {[lengths[i] for i in chosen]}; question: {question!r}")

    cpu_start, wall_start, own_start = _cpu_times(), time.perf_counter(), time.process_time()
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
        args.json.write_text(json.dumps({"machine": info, "results": results}, indent=1))
    print(f"\n{verdict}. Wrote {args.out / 'rag_ttft.md'}")


if __name__ == "__main__":
    main()
