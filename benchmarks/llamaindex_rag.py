"""The same LlamaIndex query engine built with llama-index's Hugging Face integrations and with egtlm.

    index = VectorStoreIndex.from_documents(docs, storage_context=<Chroma>, embed_model=...)
    engine = index.as_query_engine(llm=..., similarity_top_k=4, streaming=True)

    huggingface  HuggingFaceEmbedding (sentence-transformers) + HuggingFaceLLM (transformers generate)
    egtlm        EgtLMEmbedding + EgtLMLLM, response_synthesizer=EgtLMSynthesizer(llm, streaming=True)
                 (states stored at indexing, spliced at query time)
    egtlm, no reuse   the same egtlm engine with EgtLMLLM(reuse_cache=False): what reuse alone buys

Both stacks load the same weights directory (`egtlm_core.default_model_dir()`, SmolLM2-135M-Instruct)
in the same dtype, decode greedily with the same `max_new_tokens`, and index the paragraphs of `--n`
XQuAD questions into their own Chroma `PersistentClient` collection. Engines run question by question
in one process, the order rotating per question. Per question: latency (question to the end of the
streamed answer) and time to first token (to the first streamed text, retrieval included). Also: RSS
growth while building and indexing each stack, the distinct weight bytes each holds (model copies),
and whether the gold XQuAD answer is in the output.

    python benchmarks/llamaindex_rag.py                    # 30 questions, 1 round, 1 torch thread
    python benchmarks/llamaindex_rag.py --n 4 --rounds 1 --no-write

Needs `pip install llama-index-embeddings-huggingface llama-index-llms-huggingface` (no egtlm extra
has them). Writes docs/benchmarks/llamaindex_rag.md and llamaindex_rag.png.
"""

from __future__ import annotations

import argparse
import gc
import json
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _common import (
    DOCS_BENCH_DIR,
    BarGroup,
    add_model_option,
    bar_plot,
    cpu_pressure,
    ensure_repo_on_path,
    iqr,
    machine_info,
    machine_markdown,
    markdown_table,
    med,
    model_name,
    ratio,
    text_table,
    write_text,
)
from langchain_rag import (
    peak_mb,
    reset_peak,
    rss_mb,
    torch_dtype,
    transformers_models,
    weight_storages,
    xquad_questions,
)

ensure_repo_on_path()

import chromadb  # noqa: E402
import torch  # noqa: E402
from chromadb.config import Settings  # noqa: E402
from llama_index.core import Document, StorageContext, VectorStoreIndex  # noqa: E402
from llama_index.vector_stores.chroma import ChromaVectorStore  # noqa: E402

from egtlm_core import default_model_dir  # noqa: E402

TARGET = 3.0  # huggingface TTFT / egtlm TTFT, per question (median of ratios)
PACKAGES = ("torch", "transformers", "sentence-transformers", "llama-index-core", "chromadb")
HF_PACKAGES = ("llama-index-embeddings-huggingface", "llama-index-llms-huggingface")


@dataclass
class Stack:
    name: str
    engines: dict[str, Any] = field(default_factory=dict)  # measured engine name -> query engine
    build_s: float = 0.0
    rss_growth_mb: float = 0.0
    peak_growth_mb: float = 0.0
    models: list[str] = field(default_factory=list)
    weight_bytes: int = 0


@dataclass
class Runs:
    latency: list[float] = field(default_factory=list)
    ttft: list[float] = field(default_factory=list)
    correct: list[bool] = field(default_factory=list)
    reports: list[dict[str, Any]] = field(default_factory=list)


def chroma_index(path: Path, texts: list[str], embed_model: Any) -> VectorStoreIndex:
    client = chromadb.PersistentClient(path=str(path), settings=Settings(anonymized_telemetry=False))
    store = ChromaVectorStore(chroma_collection=client.get_or_create_collection("xquad"))
    context = StorageContext.from_defaults(vector_store=store)
    docs = [Document(text=t) for t in texts]
    return VectorStoreIndex.from_documents(docs, storage_context=context, embed_model=embed_model)


def build_huggingface(texts: list[str], dtype: torch.dtype, args: Any, tmp: Path) -> Stack:
    from llama_index.embeddings.huggingface import HuggingFaceEmbedding
    from llama_index.llms.huggingface import HuggingFaceLLM

    weights = str(model_name(args) or default_model_dir())
    embed = HuggingFaceEmbedding(model_name=weights, device="cpu", model_kwargs={"dtype": dtype})
    llm = HuggingFaceLLM(
        model_name=weights,
        tokenizer_name=weights,
        device_map="cpu",
        model_kwargs={"dtype": dtype},
        max_new_tokens=args.max_new_tokens,
        generate_kwargs={"do_sample": False},
        is_chat_model=True,  # the tokenizer's chat template; LlamaIndex's chat QA prompt
        context_window=8192,
    )
    index = chroma_index(tmp / "hf", texts, embed)
    engine = index.as_query_engine(llm=llm, similarity_top_k=args.k, streaming=True)
    return Stack("huggingface", {"huggingface": engine})


def build_egtlm(texts: list[str], dtype: torch.dtype, args: Any, tmp: Path) -> Stack:
    from llama_index.embeddings.egtlm import EgtLMEmbedding
    from llama_index.llms.egtlm import EgtLMLLM
    from llama_index.response_synthesizers.egtlm import EgtLMSynthesizer

    from egtlm_core import MemoryTier

    # KV states in a fresh RAM tier: the default store also writes them under the user cache dir,
    # where a second run would find them already captured.
    load = {"torch_dtype": str(dtype).removeprefix("torch."), "cache_store": MemoryTier(max_bytes=8 << 30)}
    index = chroma_index(tmp / "egtlm", texts, EgtLMEmbedding(model=model_name(args), model_kwargs=load))
    stack = Stack("egtlm")
    for name, reuse in (("egtlm", True), ("egtlm, no reuse", False)):
        llm = EgtLMLLM(
            model=model_name(args), max_new_tokens=args.max_new_tokens, reuse_cache=reuse, model_kwargs=load
        )
        synth = EgtLMSynthesizer(llm, streaming=True)
        if reuse:
            synth.store_states(texts)  # at indexing: one capture pass per paragraph, after the QA head
        stack.engines[name] = index.as_query_engine(
            llm=llm, similarity_top_k=args.k, response_synthesizer=synth
        )
    return stack


def build(name: str, factory: Any) -> Stack:
    """Build a stack (load + index), measuring time, RSS growth, peak RSS and the weights it holds."""
    gc.collect()
    before = {id(m) for m in transformers_models()}
    rss0 = rss_mb()
    reset_peak()
    start = time.perf_counter()
    stack = factory()
    stack.build_s = time.perf_counter() - start
    gc.collect()
    stack.rss_growth_mb, stack.peak_growth_mb = rss_mb() - rss0, peak_mb() - rss0
    mine = [m for m in transformers_models() if id(m) not in before]
    stack.models = [type(m).__name__ for m in mine]
    stack.weight_bytes = sum(weight_storages(mine).values())
    print(
        f"built {name}: {stack.build_s:.1f} s, RSS +{stack.rss_growth_mb:.0f} MB, {stack.models}", flush=True
    )
    return stack


def ask(engine: Any, question: str) -> tuple[float, float, str, dict[str, Any]]:
    """(latency, ttft, answer, egtlm report) of one streamed query."""
    start = time.perf_counter()
    response = engine.query(question)
    ttft, text = None, ""
    for token in response.response_gen:
        if token and ttft is None:
            ttft = time.perf_counter() - start
        text += token
    latency = time.perf_counter() - start
    return latency, ttft if ttft is not None else latency, text, dict(response.metadata.get("egtlm", {}))


def run_questions(engines: dict[str, Any], questions: list[Any], rounds: int) -> dict[str, Runs]:
    runs = {name: Runs() for name in engines}
    names = list(engines)
    for r in range(rounds):
        for i, q in enumerate(questions):
            shift = (r * len(questions) + i) % len(names)
            line = []
            for name in names[shift:] + names[:shift]:
                latency, ttft, answer, report = ask(engines[name], q.text)
                run = runs[name]
                run.latency.append(latency)
                run.ttft.append(ttft)
                if r == 0:
                    run.correct.append(any(a.lower() in answer.lower() for a in q.answers))
                    run.reports.append(report)
                line.append(f"{name} {latency:5.2f}s (ttft {ttft:4.2f})")
            print(f"  round {r + 1} q{i + 1:02d}  " + "  ".join(line), flush=True)
    return runs


def result_rows(runs: dict[str, Runs], stacks: dict[str, Stack], n: int) -> list[list[str]]:
    hf, eg, pre = runs["huggingface"], runs["egtlm"], runs["egtlm, no reuse"]
    hs, es = stacks["huggingface"], stacks["egtlm"]
    one = es.weight_bytes

    def row(label: str, a: list[float], b: list[float], c: list[float]) -> list[str]:
        return [label, f"{med(a):.3f}", f"{med(b):.3f}", f"{ratio(a, b):.2f}×", f"{med(c):.3f}"]

    return [
        row("time to first token, median (s)", hf.ttft, eg.ttft, pre.ttft),
        row("latency per question, median (s)", hf.latency, eg.latency, pre.latency),
        [
            "answers containing the gold span",
            f"{sum(hf.correct)}/{n}",
            f"{sum(eg.correct)}/{n}",
            "-",
            f"{sum(pre.correct)}/{n}",
        ],
        ["load + index (s)", f"{hs.build_s:.1f}", f"{es.build_s:.1f}", "-", "shared"],
        [
            "RSS growth, load + index (MB)",
            f"{hs.rss_growth_mb:.0f}",
            f"{es.rss_growth_mb:.0f}",
            f"{hs.rss_growth_mb / es.rss_growth_mb:.2f}×",
            "shared",
        ],
        ["peak RSS above start (MB)", f"{hs.peak_growth_mb:.0f}", f"{es.peak_growth_mb:.0f}", "-", "shared"],
        [
            "weights held (MB)",
            f"{hs.weight_bytes / 2**20:.0f}",
            f"{es.weight_bytes / 2**20:.0f}",
            f"{hs.weight_bytes / one:.2f}×",
            "shared",
        ],
        [
            "model copies",
            f"{hs.weight_bytes / one:.0f} ({' + '.join(hs.models)})",
            f"1 ({' + '.join(es.models)})",
            "-",
            "shared",
        ],
    ]


HEADERS = ["measure", "llama-index huggingface", "egtlm", "hf / egtlm", "egtlm, no reuse"]


def reuse_line(runs: Runs) -> str:
    reports = [r for r in runs.reports if r]
    if not reports:
        return "egtlm reported nothing."
    pick = {k: med([float(r.get(k) or 0) for r in reports]) for k in ("reused_tokens", "prefilled_tokens")}
    sums = {
        k: sum(int(r.get(k) or 0) for r in reports) for k in ("exact_slots", "approximate_slots", "misses")
    }
    return (
        f"Per question egtlm reused a median of {pick['reused_tokens']:.0f} prompt tokens and prefilled "
        f"{pick['prefilled_tokens']:.0f}; over {len(reports)} questions {sums['exact_slots']} exact and "
        f"{sums['approximate_slots']} approximate document slots, {sums['misses']} misses "
        "(`response.metadata['egtlm']`)."
    )


def write_report(args: Any, info: dict[str, str], runs: dict[str, Runs], stacks: dict[str, Stack]) -> None:
    hf, eg = runs["huggingface"], runs["egtlm"]
    ttft_x, lat_x = ratio(hf.ttft, eg.ttft), ratio(hf.latency, eg.latency)
    png = args.out / "llamaindex_rag.png"
    labels = ["llama-index hf", "egtlm"]
    hs, es = stacks["huggingface"], stacks["egtlm"]
    bar_plot(
        png,
        [
            BarGroup(
                "time to first token (median, IQR)",
                labels,
                [med(hf.ttft), med(eg.ttft)],
                "seconds",
                ranges=[iqr(hf.ttft), iqr(eg.ttft)],
                notes=["", f"{ttft_x:.2f}× sooner"],
                reference=(med(hf.ttft) / TARGET, f"{TARGET:.0f}× target"),
            ),
            BarGroup(
                "latency per question (median, IQR)",
                labels,
                [med(hf.latency), med(eg.latency)],
                "seconds",
                ranges=[iqr(hf.latency), iqr(eg.latency)],
                notes=["", f"{lat_x:.2f}× faster"],
            ),
            BarGroup(
                "RSS growth: load + index",
                labels,
                [hs.rss_growth_mb, es.rss_growth_mb],
                "MB",
                notes=[f"{hs.weight_bytes / es.weight_bytes:.0f} model copies", "1 model copy"],
            ),
        ],
        suptitle=f"Same LlamaIndex query engine over Chroma, k = {args.k}, {args.n} XQuAD questions × "
        f"{args.rounds} round(s), {info['dtype']}, {info['torch threads']} torch thread",
    )
    met = "met" if ttft_x >= TARGET else "not met"
    md = f"""# LlamaIndex query engine: llama-index's Hugging Face integrations vs egtlm

One `VectorStoreIndex` over `ChromaVectorStore` per stack, queried with
`index.as_query_engine(llm=..., similarity_top_k={args.k}, streaming=True)`, in one process, over the
same weights (`egtlm_core.default_model_dir()`, SmolLM2-135M-Instruct):

- **llama-index huggingface**: `HuggingFaceEmbedding` (sentence-transformers) and `HuggingFaceLLM`
  (transformers `generate`, streamed through `TextIteratorStreamer`).
- **egtlm**: `EgtLMEmbedding`, `EgtLMLLM`, and the one egtlm class swapped in,
  `response_synthesizer=EgtLMSynthesizer(llm, streaming=True)`: the paragraphs' KV states are
  stored at indexing (after the text-QA template's head) and spliced at query time.
- **egtlm, no reuse**: the same engine with `EgtLMLLM(reuse_cache=False)`.

dtype {info["dtype"]}, greedy, `max_new_tokens={args.max_new_tokens}`, {args.n} XQuAD questions (one
per paragraph, spread over all 240), their {args.n} paragraphs indexed, k = {args.k}; {args.rounds} round(s),
the order rotating per question; medians over {args.n * args.rounds} runs; answers scored on round 1.

## Result

Target ≥ {TARGET:.0f}× sooner to the first token and one copy of the weights: **{met}** —
{ttft_x:.2f}× sooner (median of per-question ratios), {lat_x:.2f}× per question end to end,
{hs.weight_bytes / es.weight_bytes:.0f} vs 1 model copies.

{markdown_table(HEADERS, result_rows(runs, stacks, args.n))}

{reuse_line(eg)}

![llamaindex_rag]({png.name})

## Why

- **Prefill is what reuse removes.** The Hugging Face stack prefills all {args.k} paragraphs (and
  LlamaIndex's long QA system prompt) for every question; egtlm splices their stored states and
  prefills only the separators, the question and the template's tail.
- **Decoding** remains, and costs both stacks about the same per token, so the end-to-end ratio is
  lower than the first-token one and falls as answers get longer.
- **Memory.** `HuggingFaceEmbedding` and `HuggingFaceLLM` each load the weights
  ({" + ".join(hs.models)}); egtlm's embedder and LLM share one loaded model.
- **Answers.** Only the first document slot is exact; the other {args.k - 1} are approximate (they
  never attended to the paragraphs before them, docs/shared_cache.md). With this untrained 135M model
  that costs answers at k = 4: compare the gold-span rows; `recompute_tokens`, k = 1, or
  `reuse_cache=False` trade speed back for them.

## Machine

{machine_markdown(info)}

The machine was shared with a training job and other sessions' work while this ran (CPU pressure
above: the share of time runnable tasks waited for a CPU), so engines are interleaved question by
question and ratios of the same question's runs are reported; absolute times move between runs.

## Reproduce

```bash
pip install llama-index-embeddings-huggingface llama-index-llms-huggingface
python benchmarks/llamaindex_rag.py --n {args.n} --rounds {args.rounds} --threads {args.threads}
```
"""
    write_text(args.out / "llamaindex_rag.md", md)
    print(f"wrote {args.out / 'llamaindex_rag.md'} and {png}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_model_option(ap)
    ap.add_argument("--n", type=int, default=30, help="XQuAD questions (one per paragraph)")
    ap.add_argument("--k", type=int, default=4, help="nodes retrieved per question")
    ap.add_argument("--rounds", type=int, default=1, help="interleaved rounds over the questions")
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--dtype", default="auto", help="both stacks' dtype (default: egtlm's 'auto' choice)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: stable on a shared machine)")
    ap.add_argument("--no-write", action="store_true", help="print only; do not write docs/")
    ap.add_argument("--out", type=Path, default=DOCS_BENCH_DIR, help="folder for the page and plot")
    ap.add_argument("--json", type=Path, default=None, help="also write each engine's timings here")
    ap.add_argument(
        "--no-huggingface",
        action="store_true",
        help="egtlm engines only (no llama-index-*-huggingface; a smoke run): no page, table and --json only",
    )
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    dtype = torch_dtype(args.dtype)
    questions = xquad_questions(args.n)
    texts = [q.context for q in questions]
    info = machine_info((*PACKAGES, *HF_PACKAGES))
    info["dtype"] = str(dtype).removeprefix("torch.")
    info["cpu pressure before"] = cpu_pressure() or "n/a"
    print(machine_markdown(info), flush=True)
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        stacks = (
            {}
            if args.no_huggingface
            else {"huggingface": build("huggingface", lambda: build_huggingface(texts, dtype, args, tmp))}
        )
        stacks["egtlm"] = build("egtlm", lambda: build_egtlm(texts, dtype, args, tmp))
        engines = {name: e for s in stacks.values() for name, e in s.engines.items()}
        for engine in engines.values():  # warm-up, not measured
            ask(engine, questions[0].text)
        runs = run_questions(engines, questions, args.rounds)
    info["cpu pressure after"] = cpu_pressure() or "n/a"
    info["peak RSS of the run (MB)"] = f"{peak_mb():.0f}"
    print()
    if args.no_huggingface:
        rows = [
            [name, f"{med(r.ttft):.3f}", f"{med(r.latency):.3f}", f"{sum(r.correct)}/{len(questions)}"]
            for name, r in runs.items()
        ]
        print(text_table(["engine", "ttft, median (s)", "latency, median (s)", "gold span"], rows))
    else:
        print(text_table(HEADERS, result_rows(runs, stacks, args.n)))
    print(reuse_line(runs["egtlm"]))
    if args.json:
        record = {
            "questions": len(questions),
            "engines": {
                n: {"ttft_s": r.ttft, "latency_s": r.latency, "correct": r.correct} for n, r in runs.items()
            },
            "build_s": {n: st.build_s for n, st in stacks.items()},
            "reuse": reuse_line(runs["egtlm"]),
            "machine": info,
        }
        write_text(args.json, json.dumps(record, indent=1))
    if not args.no_write and not args.no_huggingface:
        write_report(args, info, runs, stacks)


if __name__ == "__main__":
    main()
