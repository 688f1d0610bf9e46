"""Model quality side by side: the base model vs a trained one on issue 10's evaluation-only targets.

Both models are loaded in one process and evaluated through the public API with their default
settings (`egtlm_core.evaluation.run_eval`, the code behind `egtlm eval`), task by task, base then
trained:

    sts       STS-B test Spearman (cosine of `encode_documents` vectors; `encode` without an
              instruction beside it)
    scifact   SciFact test nDCG@10 (300 queries; the full 5183-document corpus unless --scifact-docs)
    xquad     XQuAD question -> paragraph recall@5 over the 240 paragraphs (1190 questions)
    zh_sts    Chinese STS-B test Spearman
    rag       generation kept: XQuAD answer match with the gold paragraph (100 questions, greedy)

    python benchmarks/quality.py                                   # base only, everything in full
    python benchmarks/quality.py --trained PATH                    # base vs PATH
    python benchmarks/quality.py --trained PATH --limit 300 --scifact-docs 1000 --rag-questions 30

`--limit` samples pairs / queries / questions (seeded); `--scifact-docs N` keeps the judged
documents plus random others, N in all (fewer distractors: higher numbers than the full corpus, so
compare subset numbers only with subset numbers). Writes docs/benchmarks/quality.md, quality.png
and, with --json, the raw results (RAG answers included); `--render FILE` rewrites the page from them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from _common import DOCS_BENCH_DIR, BarGroup, bar_plot, ensure_repo_on_path, machine_info, markdown_table

ensure_repo_on_path()

import torch  # noqa: E402

from egtlm_core import EgtLM  # noqa: E402
from egtlm_core.evaluation import HEADLINE, EvalOptions, run_eval  # noqa: E402

# task -> (what the table calls it, "base today" in the issue, target, floor or None)
TARGETS: dict[str, tuple[str, float, float, float | None]] = {
    "sts": ("STS-B test Spearman", 0.430, 0.82, 0.80),
    "scifact": ("SciFact test nDCG@10", 0.113, 0.65, None),
    "xquad": ("XQuAD question → paragraph recall@5 (240 paragraphs)", 0.549, 0.95, None),
    "zh_sts": ("Chinese STS-B test Spearman", 0.513, 0.70, None),
    "rag": ("generation kept: XQuAD match with the gold paragraph, %", 36.0, 34.0, None),
}
ORDER = ("sts", "scifact", "xquad", "zh_sts", "rag")
COUNTS = ("pairs", "queries", "questions")


def load(name: str | None) -> tuple[EgtLM, float]:
    start = time.perf_counter()
    model = EgtLM(None if name in (None, "default") else name)
    return model, time.perf_counter() - start


def evaluate(
    models: dict[str, EgtLM], tasks: list[str], args: argparse.Namespace, done: dict[str, Any], save: Any
) -> dict[str, Any]:
    """{task: {label: result}}, each task run for every model before the next one. Results already in
    `done` (from --resume) are kept, and `save(out)` is called after each result, so a run that is
    stopped (a slow shared machine) loses at most the task in progress."""
    out: dict[str, Any] = {task: dict(done.get(task, {})) for task in tasks}
    for task in tasks:
        limit = args.rag_questions if task == "rag" else args.limit
        opts = EvalOptions(
            limit=limit,
            scifact_documents=args.scifact_docs,
            sts_sides=tuple(args.sts_sides),
            seed=args.seed,
            data_dir=args.data_dir,
        )
        for label, model in models.items():
            if label in out[task]:
                print(f"{task:8s} {label:8s} kept from --resume", flush=True)
                continue
            result = run_eval(model, [task], opts)["tasks"][task]
            out[task][label] = result
            save(out)
            value = result[HEADLINE[task]]
            print(
                f"{task:8s} {label:8s} {HEADLINE[task]} {value:.4f}  ({result['wall_s']:.0f} s)", flush=True
            )
    return out


def verdict(task: str, value: float) -> str:
    _, _, target, floor = TARGETS[task]
    if value >= target:
        return "**met**"
    gap = target - value
    shown = f"{gap:.1f} points" if task == "rag" else f"{gap:.3f}"
    floor_note = f"; floor {floor} {'met' if value >= floor else 'not met'}" if floor is not None else ""
    return f"not met (short by {shown}{floor_note})"


def fmt(task: str, value: float) -> str:
    return f"{value:.1f}" if task == "rag" else f"{value:.3f}"


def result_rows(res: dict[str, Any]) -> list[list[str]]:
    labels = res["labels"]
    rows = []
    for task in [t for t in ORDER if t in res["tasks"]]:
        name, today, target, _ = TARGETS[task]
        by = res["tasks"][task]
        values = [by[label][HEADLINE[task]] for label in labels]
        row = [name, fmt(task, today), *[fmt(task, v) for v in values]]
        if len(labels) == 2:
            row.append(f"{values[1] - values[0]:+.3f}" if task != "rag" else f"{values[1] - values[0]:+.1f}")
        n = next(by[labels[0]][k] for k in COUNTS if k in by[labels[0]])
        row += [fmt(task, target), verdict(task, values[-1]), str(n)]
        rows.append(row)
    return rows


def detail_rows(res: dict[str, Any]) -> list[list[str]]:
    """Secondary metrics and times per task and model."""
    rows = []
    for task in [t for t in ORDER if t in res["tasks"]]:
        for label, r in res["tasks"][task].items():
            if task in ("sts", "zh_sts"):
                extra = ", ".join(
                    f"{k.removeprefix('spearman_')} {v:.3f}"
                    for k, v in r.items()
                    if k.startswith("spearman_")
                )
            elif task == "rag":
                extra = f"match {r['match']:.1f}%, token F1 {r['f1']:.1f}%, EM {r['em']:.1f}%"
            else:
                extra = ", ".join(
                    f"{k} {r[k]:.3f}"
                    for k in ("ndcg@10", "mrr@10", "recall@1", "recall@5", "recall@10", "recall@100")
                )
                rate = r["documents"] / r["documents_s"]
                extra += f"; {r['documents']} documents in {r['documents_s']:.0f} s ({rate:.1f}/s)"
            rows.append([task, label, extra, f"{r['wall_s']:.0f}"])
    return rows


def plot(res: dict[str, Any], path: Path) -> None:
    groups = []
    for task in [t for t in ORDER if t in res["tasks"]]:
        name, _, target, _ = TARGETS[task]
        values = [res["tasks"][task][label][HEADLINE[task]] for label in res["labels"]]
        groups.append(
            BarGroup(name, list(res["labels"]), values, HEADLINE[task], reference=(target, "target"))
        )
    bar_plot(path, groups, suptitle=f"base vs trained (plain EgtLM() defaults) — {res['machine']['cpu']}")


def subset_note(args: dict[str, Any]) -> str:
    parts = []
    if args.get("limit"):
        parts.append(f"a seeded sample of {args['limit']} pairs / queries per set")
    if args.get("scifact_docs"):
        parts.append(f"a SciFact corpus of {args['scifact_docs']} documents (judged + random others)")
    if args.get("rag_questions") != 100:
        parts.append(f"{args.get('rag_questions')} RAG questions")
    if not parts:
        return (
            "Full sets: every STS-B and Chinese STS-B test pair, all 300 SciFact test queries over the "
            "full 5183-document corpus, all 1190 XQuAD questions over the 240 paragraphs, 100 RAG questions."
        )
    return "**Subset run** (" + "; ".join(parts) + "): not comparable with full-set numbers."


def write_markdown(res: dict[str, Any], path: Path) -> str:
    labels, a = res["labels"], res["args"]
    headers = ["metric (plain `EgtLM()` defaults)", "issue's base today", *labels]
    headers += ["delta"] if len(labels) == 2 else []
    headers += ["target", f"status ({labels[-1]})", "items"]
    models = "; ".join(
        f"{label}: `{m['source']}` ({m['dtype']}, loaded in {m['load_s']:.1f} s)"
        for label, m in res["models"].items()
    )
    shown = {k: " ".join(map(str, v)) if isinstance(v, list) else v for k, v in a.items()}
    skip = ("json", "out", "render", "data_dir", "resume")
    cmd = "python benchmarks/quality.py" + "".join(
        f" --{k.replace('_', '-')} {v}" for k, v in shown.items() if v is not None and k not in skip
    )
    lines = [
        "# Model quality: base vs trained (issue 10's evaluation-only targets)",
        "",
        f"Produced by `benchmarks/quality.py` on {res['machine']['date']}, {res['minutes']:.0f} min in all. "
        f"CPU: {res['machine']['cpu']} ({res['machine']['logical cpus']} logical CPUs, shared with other "
        "jobs; "
        f"`torch.set_num_threads({res['threads']})`), torch {res['machine']['torch']}, transformers "
        f"{res['machine']['transformers']}, Python {res['machine']['python']}. Models: {models}.",
        "",
        subset_note(a),
        "",
        *(
            [
                "Results kept from earlier runs of the same code and settings (`--resume`, each an "
                "`egtlm eval --json` file or this benchmark's own): "
                + "; ".join(
                    f"`{r}`" + (f" from `{cmd}`" if cmd else "") for r, cmd in res.get("resumed", {}).items()
                )
                + ". Every task states its own wall time below.",
                "",
            ]
            if a.get("resume")
            else []
        ),
        markdown_table(headers, result_rows(res)),
        "",
        "![base vs trained](quality.png)",
        "",
        "## Details",
        "",
        markdown_table(["task", "model", "metrics", "wall s"], detail_rows(res)),
        "",
        "## How each number is measured",
        "",
        "- Everything goes through the public API with the model's configured instructions "
        "(`egtlm_core.evaluation`, the same code as `egtlm eval`): STS pairs embed both texts with "
        "`encode_documents` (what `EgtLMEmbeddings.embed_documents` does); *plain* is `encode(texts)` "
        "without an instruction (how the issue's 0.430 was measured: see *plain* under Details). "
        "Spearman of cosine vs gold (scipy).",
        "- Retrieval: queries with `encode_queries`, documents with `encode_documents` (SciFact as "
        "`{title, text}`, joined GritLM-style), cosine ranking; nDCG@10 with trec_eval's linear gain "
        "over the graded qrels, recall@k = judged relevant found in the top k / judged relevant, MRR@10.",
        "- RAG: `EgtLM.answer(question, [gold paragraph], reuse_cache=False, max_new_tokens=48)` on "
        "the seeded sample (seed 0) that `benchmarks/rag_quality.py` also draws; *match* = a SQuAD-"
        "normalised gold answer occurs in the normalised answer (`egtlm_core.evaluation.answers`, "
        "shared with rag_quality.py); token F1 and EM beside it.",
        "",
        "## Reproduce",
        "",
        "```",
        ". .venv/bin/activate",
        cmd,
        "```",
        "",
        "Single sets, same code and defaults: `egtlm eval default --task sts --task retrieval "
        "--task zh_sts --task rag --json out.json`.",
        "",
    ]
    path.write_text("\n".join(lines), encoding="utf-8")
    return "\n".join(lines)


def merge_previous(
    done: dict[str, Any], spec: str, args: argparse.Namespace, sources: dict[str, str]
) -> None:
    """Add finished results from `spec`: a --json file of this benchmark, or `LABEL=FILE` with the
    --json output of `egtlm eval` (the same `run_eval` code) for that model. The settings that
    change a number must match this run's, or it stops. Returns the command that made the file."""
    label, _, name = spec.rpartition("=") if "=" in spec else ("", "", spec)
    previous = json.loads(Path(name).read_text(encoding="utf-8"))
    if "labels" in previous:  # this benchmark's own file
        for key in ("base", "trained", "limit", "scifact_docs", "rag_questions", "sts_sides", "seed"):
            if previous["args"].get(key) != getattr(args, key):
                raise SystemExit(f"--resume {name}: {key} was {previous['args'].get(key)!r} there")
        for task, by_label in previous["tasks"].items():
            done.setdefault(task, {}).update(by_label)
        return None
    if label not in sources:
        raise SystemExit(f"--resume {spec}: an `egtlm eval` file needs one of {sorted(sources)}=FILE")
    if previous["model"] != sources[label]:
        raise SystemExit(f"--resume {spec}: evaluated {previous['model']}, {label} is {sources[label]}")
    opts = previous["options"]
    for task, result in previous["tasks"].items():
        limit = args.rag_questions if task == "rag" else args.limit
        want = {
            "limit": None if task == "rag" and limit == 100 else limit,
            "seed": args.seed,
            "split": "test",
        }
        if task == "scifact":
            want["scifact_documents"] = args.scifact_docs
        if task in ("sts", "zh_sts"):
            want["sts_sides"] = list(args.sts_sides)
        if task == "rag":
            want["max_new_tokens"] = EvalOptions().max_new_tokens
        bad = {k: opts.get(k) for k, v in want.items() if opts.get(k) != v}
        if bad:
            raise SystemExit(f"--resume {spec}: {task} was run with {bad}, this run wants {want}")
        done.setdefault(task, {})[label] = result
    return previous.get("command")


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Load the models, evaluate every task (saving after each result with --json), return all."""
    torch.set_num_threads(args.threads)
    machine = machine_info()
    start = time.perf_counter()
    names = {"base": args.base, **({"trained": args.trained} if args.trained else {})}
    loaded = {label: load(name) for label, name in names.items()}
    done: dict[str, Any] = {}
    sources = {label: m.source.cache_id() for label, (m, _) in loaded.items()}
    resumed = {spec: merge_previous(done, spec, args, sources) for spec in args.resume}
    res: dict[str, Any] = {
        "labels": list(loaded),
        "models": {
            label: {"source": m.source.cache_id(), "dtype": str(m.dtype).removeprefix("torch."), "load_s": s}
            for label, (m, s) in loaded.items()
        },
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "machine": machine,
        "threads": args.threads,
        "resumed": resumed,
    }

    def save(tasks: dict[str, Any]) -> None:
        res.update(tasks=tasks, minutes=(time.perf_counter() - start) / 60)
        res["machine"]["load_after"] = str(os.getloadavg())
        if args.json:
            args.json.write_text(json.dumps(res, indent=1, ensure_ascii=False), encoding="utf-8")

    models = {label: m for label, (m, _) in loaded.items()}
    save(evaluate(models, [t for t in ORDER if t in args.tasks], args, done, save))
    return res


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--base", default="default", help="the base model ('default': EgtLM())")
    parser.add_argument("--trained", default=None, help="the trained model (directory or adapter)")
    parser.add_argument("--tasks", nargs="+", default=list(ORDER), choices=ORDER)
    parser.add_argument("--limit", type=int, default=None, help="pairs / queries per set (seeded sample)")
    parser.add_argument("--scifact-docs", type=int, default=None, help="SciFact corpus subset size")
    parser.add_argument("--rag-questions", type=int, default=100)
    parser.add_argument(
        "--sts-sides",
        nargs="+",
        default=["document", "plain"],
        choices=["document", "query", "plain", "bare"],
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the machine is shared)")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out", type=Path, default=DOCS_BENCH_DIR)
    parser.add_argument("--json", type=Path, default=None, help="also write the raw results here")
    parser.add_argument("--render", type=Path, default=None, help="only rewrite the page from a --json file")
    parser.add_argument(
        "--resume",
        action="append",
        default=[],
        metavar="[LABEL=]FILE",
        help="keep finished results: this benchmark's --json file, or base=FILE / trained=FILE with the "
        "--json of `egtlm eval` for that model (same settings required)",
    )
    args = parser.parse_args()
    res = json.loads(args.render.read_text(encoding="utf-8")) if args.render else run(args)
    args.out.mkdir(parents=True, exist_ok=True)
    plot(res, args.out / "quality.png")
    print(write_markdown(res, args.out / "quality.md"))
    print(f"Wrote {args.out / 'quality.md'}", file=sys.stderr)


if __name__ == "__main__":
    main()
