"""The page `benchmarks/rag_ttft.py` writes (docs/benchmarks/rag_ttft.md) and its plot."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

CONDITIONS = ("full", "warm", "disk", "int8")  # the answers measured
SERIES = (*CONDITIONS, "floor")  # plotted: the floor is the warm answers' own live forward


def plot(results: list[dict[str, Any]], ks: list[int], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(6.6 * len(results), 4.6), squeeze=False)
    colors = {
        "full": "#888888",
        "warm": "#1f77b4",
        "disk": "#2ca02c",
        "int8": "#ff7f0e",
        "floor": "#d62728",
    }
    labels = {
        "full": "full prefill",
        "warm": "reuse, RAM",
        "disk": "reuse, disk",
        "int8": "reuse, int8 disk",
        "floor": "floor: the warm answer's live forward",
    }
    width = 0.13
    for ax, res in zip(axes[0], results, strict=True):
        w = res["wall_ms"]
        for j, cond in enumerate(SERIES):
            xs = [i + (j - (len(SERIES) - 1) / 2) * width for i in range(len(ks))]
            ys = [w[f"{cond}@{k}"] for k in ks]
            ax.bar(xs, ys, width, color=colors[cond], label=labels[cond])
            for x, y, k in zip(xs, ys, ks, strict=True):
                text = f"{y:.0f}" if cond in ("full", "floor") else f"{w[f'full@{k}'] / y:.1f}×"
                ax.text(x, y * 1.05, text, ha="center", va="bottom", fontsize=7)
        ax.set_yscale("log")
        ax.set_xticks(range(len(ks)))
        ax.set_xticklabels([f"k={k}\n({res['tokens'][k]['prompt']} tok)" for k in ks])
        ax.set_ylabel("time to first token, ms (log)")
        ax.set_title(f"SmolLM2-135M-Instruct, {res['dtype']} (labels: ms, or full/reuse)")
        ax.grid(axis="y", alpha=0.3, which="both")
        ax.legend(fontsize=7.5, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _load_line(info: dict[str, Any]) -> str:
    load = info.get("load", {})
    before = ", ".join(f"{x:.1f}" for x in info["load_before"])
    after = ", ".join(f"{x:.1f}" for x in info["load_after"])
    line = f"Load average (1, 5, 15 min) before the run: {before}; after: {after}."
    if "others_cores" in load:
        line += (
            f" Over the whole run the machine's {load['cores']} cores were busy {load['busy_cores']:.2f} "
            f"cores' worth on average, this benchmark's own thread {load['own_cores']:.2f} of it: other "
            f"jobs took **{load['others_cores']:.2f} of {load['cores']} cores** while it measured."
        )
    return line


def page(
    results: list[dict[str, Any]],
    info: dict[str, Any],
    args: Any,
    table: Callable[..., str],
    small_tables: Callable[..., str],
    verdicts: Callable[..., tuple[float, float, str]],
) -> str:
    ks, kmax = args.ks, max(args.ks)
    first = results[0]
    out = [
        "# RAG time to first token: shared-cache reuse vs full prefill",
        "",
        f"Produced by `benchmarks/rag_ttft.py`. Machine: {info['cpu']}, {info['cores']} cores, ISA flags "
        f"{' '.join(info.get('flags', [])) or 'n/a'}; torch {info['torch']} "
        f"(`torch.set_num_threads({info['torch_threads']})`), transformers {info['transformers']}, "
        f"Python {info['python']}; {info['date']}. {_load_line(info)}",
        "",
        f"**Setup.** Model: {getattr(args, 'model', None) or 'the default (SmolLM2-135M-Instruct)'}. The "
        f"{len(first['doc_tokens'])} XQuAD paragraphs closest to {args.target_tokens} tokens "
        f"({', '.join(map(str, first['doc_tokens']))} tokens), the first k of them plus one XQuAD "
        "question in the default RAG layout (system prompt, `Documents:` header, paragraphs separated "
        "by a blank line, question). Every cell is the median of "
        f"{args.repeats} interleaved repeats (the order of the four answers rotates every repeat) "
        "of the wall time of `EgtLM.answer(question, documents, max_new_tokens=1, recompute_tokens=0)`: "
        "planning, building the cache, prefilling the live tokens and producing the first token. Each "
        "column is an `EgtLM` over the same shared weights with its own `cache_store`, the states "
        "stored by `document_cache.capture(documents)`. *warm*: a RAM tier (`MemoryTier`); *disk*: a "
        "fresh `DiskTier` over the files written at indexing (in the OS page cache, so read + checksum "
        "+ decode); *int8*: the same with `DiskTier(int8=True)`. *floor*: the warm answer's own live "
        "forward — the one forward of the separators, question and chat tail over the spliced cache "
        "(`result.reuse.forward_s`), the least any reuse path can take; *warm/floor* is the median "
        "over the warm answers of each answer's time over its own forward, so both come from the same "
        "call under the same load.",
        "",
        f"Threads: {info['torch_threads']}. On this shared 2-core machine two OpenMP threads stall at "
        "every barrier when another job holds a core, so the runs use one.",
        "",
    ]
    for res in results:
        out += [
            f"## {res['dtype']}"
            + (" (the default model's auto dtype)" if res["requested"] == "auto" else ""),
            "",
            table(res, ks),
            "",
            verdicts(res, ks)[2],
            "",
            f"Where a reuse answer's time goes at k = {kmax} (means over the measured answers of "
            "their `ReuseStats` timings, `result.reuse.summary()['timings_ms']`), the tiers' load cost "
            "and size, and indexing (`document_cache.capture(documents)` in one call vs one call per "
            "document):",
            "",
            small_tables(res),
            "",
        ]
        diff = sorted(key for key, same in res["first_token_same_as_full"].items() if not same)
        out += [
            "First generated token equal to full prefill's: "
            + ("all cells." if not diff else f"all but {', '.join(diff)}.")
            + " (k = 1 is exact; later paragraphs never attended to the ones before them, so k > 1 "
            "may differ — see rag_quality.md.)",
            "",
        ]
    out += [
        "![TTFT per k](rag_ttft.png)",
        "",
        '## What the reuse path does now (issue 9, "one forward, not two plus overhead")',
        "",
        "An Intel Xeon with AMX measured only 2.5× at k = 5 with the previous path: once prefill is fast, "
        "its fixed costs show — a masked forward over the blank-line separators (~42 ms there), then "
        "`generate`'s per-call set-up and a second forward for the question (~90 ms), and ~10 ms of "
        "re-rotation and concatenation. A forward of a few tokens costs about the same whatever its "
        "length (it reads all weights), so the floor is one forward. Changes:",
        "",
        "1. **One forward.** `KVReuser.prefill` sends every live token of the plan — the separators, "
        "any recomputed document heads and the question with the chat tail — through the model in one "
        "forward with a position mask (each live token sees every token at or before its position, "
        "spliced or live) and keeps only the last position's logits (`logits_to_keep=1`). The "
        "separators still see every paragraph before them, exactly as in a full prefill; the "
        "block-attention equality tests hold unchanged. (Storing each paragraph with its trailing "
        "separator would have removed the same forward, but made the separator states approximate "
        "and the stored entries differ from the document tokens that framework prompts are matched on.)",
        "2. **No `generate` on the hot path.** The first token comes from that forward; "
        "`generation/decode.py` decodes on from it in the caller's thread with `generate`'s own merged "
        "config and logits processors (tests: token-identical to `generate`, greedy and seeded "
        "sampling, EOS, stop strings, the JSON grammar). `generate` with a stop string spends "
        "~200 ms building its stop-string tables per call on SmolLM2's vocabulary; the loop checks "
        "the decoded text instead.",
        "3. **Less copying.** Stored paragraphs are written once into per-layer buffers sized for the "
        "whole plan (before: rotated, concatenated, then copied again by `DynamicCache.update`), keys "
        "re-rotated layer by layer so the float32 temporaries stay in cache.",
        "4. **Batched capture at indexing.** `KVReuser.index` captures the paragraphs not yet stored "
        "in padded, length-sorted batches, one forward per batch, each row's pad columns dropped "
        "(tested equal, ≤ 1e-5 in float32, to one plain forward per document, left and right padding).",
        "",
        "Not measured here: the AMX Xeon. The floor ratio is the machine-independent part (the "
        "overhead left around one forward); rerun this script there to record its row.",
        "",
        "## Reproduce",
        "",
        "```",
        ". .venv/bin/activate",
        f"python benchmarks/rag_ttft.py --dtypes {' '.join(args.dtypes)} --repeats {args.repeats}"
        + (f" --threads {args.threads}" if args.threads else "")
        + f" --ks {' '.join(map(str, ks))}",
        "```",
        "",
        "Timings on shared machines are noisy: compare the ratios of one run, with the absolute "
        "numbers beside them.",
        "",
    ]
    return "\n".join(out)
