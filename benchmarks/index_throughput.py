#!/usr/bin/env python
"""Indexing for the shared cache: one pass (embed from the capture forward) vs two passes.

    python benchmarks/index_throughput.py [--model default] [--sets XQuAD SciFact] [--scifact-docs 300]
        [--scifact-queries 100] [--repeats 1] [--threads 1] [--page docs/benchmarks/index_throughput.md]

`EgtLM.index(documents)` both embeds documents and stores their KV states. Two systems over the same
loaded weights, interleaved round by round in one process, each round into a fresh RAM store (so
every document is really captured):

- **two passes**: `document_context="instruction"`: an embedding forward under the document
  instruction, then a capture forward after the RAG head;
- **one pass**: `document_context="rag"`: the capture forward after the RAG head, the vector pooled
  from its hidden states (what the trained default does).

Then retrieval quality of the vectors each system indexed, queries embedded the same way (XQuAD
question -> paragraph recall@5 over its 240 paragraphs; SciFact test nDCG@10 over a corpus subset of
the judged documents and seeded others). Prints documents/s, the ratio and the quality side by side.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

C.ensure_repo_on_path()

import numpy as np  # noqa: E402
import torch  # noqa: E402

SYSTEMS = {"two passes": "instruction", "one pass": "rag"}


def load_sets(args: argparse.Namespace) -> dict[str, object]:
    from egtlm_core.evaluation import corpus_subset, qa_as_retrieval, read_scifact, read_xquad, subsample

    xquad = qa_as_retrieval(read_xquad())
    scifact = read_scifact("test")
    qids = subsample([q for q in scifact.queries if scifact.qrels.get(q)], args.scifact_queries, seed=0)
    scifact.queries = {q: scifact.queries[q] for q in qids}
    scifact.qrels = {q: scifact.qrels[q] for q in qids}
    sets = {"XQuAD": xquad, "SciFact": corpus_subset(scifact, args.scifact_docs, seed=0)}
    return {name: sets[name] for name in args.sets}


def index_with(model_name: str, context: str, texts: list[str]):
    """A fresh EgtLM (shared weights, empty RAM store) in `context`, after indexing `texts`."""
    from egtlm_core import EgtLM, MemoryTier

    m = EgtLM(model_name, document_context=context, cache_store=MemoryTier(max_bytes=8 << 30))
    m.index(texts, ids=[str(i) for i in range(len(texts))])
    return m


def quality(m, data) -> dict[str, float]:
    """Retrieval metrics of the vectors `m` indexed (its own DocumentIndex), queries via encode_queries."""
    from egtlm_core.evaluation import score_rankings, top_k

    doc_ids = list(data.corpus)
    index = m.documents
    rows = {int(i): r for r, i in enumerate(index.ids)}
    vectors = index.vectors[[rows[i] for i in range(len(doc_ids))]]
    qids = [q for q in data.queries if data.qrels.get(q)]
    queries = np.asarray(m.encode_queries([data.queries[q] for q in qids]), dtype=np.float32)
    top = top_k(queries, vectors, 10)
    rankings = {q: [doc_ids[i] for i in row] for q, row in zip(qids, top, strict=True)}
    return score_rankings(rankings, data.qrels, (1, 5, 10))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--model", default="default", help="model name or path (default: EgtLM()'s)")
    parser.add_argument("--sets", nargs="+", default=["XQuAD", "SciFact"], choices=["XQuAD", "SciFact"])
    parser.add_argument("--scifact-docs", type=int, default=300, help="judged documents + seeded others")
    parser.add_argument("--scifact-queries", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--page", default=None, help="write a markdown page here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from egtlm_core import EgtLM, document_text

    model_name = None if args.model == "default" else args.model
    warm = EgtLM(model_name)  # load (and convert) once; the systems share these weights
    warm.index(["warm-up document."])
    facts = C.machine_facts(args.threads)
    rows, results = [], {}
    for set_name, data in load_sets(args).items():
        texts = [document_text(d) for d in data.corpus.values()]
        systems = {
            name: (lambda c=context, t=texts: index_with(model_name, c, t))
            for name, context in SYSTEMS.items()
        }
        print(f"{set_name}: {len(texts)} documents")
        timings = C.interleave(systems, args.repeats)
        two, one = timings["two passes"], timings["one pass"]
        ratios = C.paired_ratios(two, one)
        q = {name: quality(t.last, data) for name, t in timings.items()}
        metric = "recall@5" if set_name == "XQuAD" else "ndcg@10"
        results[set_name] = {
            "documents": len(texts),
            "seconds": {n: t.seconds for n, t in timings.items()},
            "ratio_median": float(np.median(ratios)),
            "quality": q,
        }
        rows.append(
            [
                set_name,
                len(texts),
                f"{len(texts) / two.median:.2f}",
                f"{len(texts) / one.median:.2f}",
                f"{np.median(ratios):.2f}x",
                f"{metric} {q['two passes'][metric]:.3f}",
                f"{metric} {q['one pass'][metric]:.3f}",
            ]
        )
    headers = [
        "set",
        "documents",
        "two passes docs/s",
        "one pass docs/s",
        "speed-up",
        "two passes",
        "one pass",
    ]
    print(C.text_table(headers, rows))
    print(f"CPU: {facts['cpu']}; torch threads {args.threads}; load before {facts['load_before']}")
    if args.page:
        page = [
            "# Indexing: one pass vs two passes",
            "",
            f"Produced by `python benchmarks/index_throughput.py --model {args.model} --scifact-docs "
            f"{args.scifact_docs} --scifact-queries {args.scifact_queries} --repeats {args.repeats} "
            f"--threads {args.threads}` on {facts['date']}. CPU: {facts['cpu']}, {facts['cores']} logical "
            f"CPUs, torch {facts['torch']}, transformers {facts['transformers']}, {args.threads} torch "
            f"thread(s); load average before the run {facts['load_before'][0]:.1f}. Model: `{args.model}`.",
            "",
            C.markdown_table(headers, rows),
            "",
            "Seconds per round: "
            + "; ".join(
                f"{s}: "
                + ", ".join(f"{n} {' / '.join(f'{x:.1f}' for x in v)}" for n, v in r["seconds"].items())
                for s, r in results.items()
            ),
        ]
        C.write_text(args.page, "\n".join(page))
        print(f"wrote {args.page}")


if __name__ == "__main__":
    main()
