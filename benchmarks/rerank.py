"""Reranking with the generator on SciFact: nDCG@10 of retrieval alone vs retrieval + rerank of the top k.

One run, one loaded model, four first stages' worth of numbers:

    dense (the model's own encode_queries / encode_documents)   alone and + rerank of its top k
    BM25 (rank-bm25, lower-cased word tokens)                    alone and + rerank of its top k

for every prompt variant given (`--prompts`): "yes_no" is the default `RerankPrompt` (score =
P("yes") vs P("no")), "query_likelihood" scores the query's likelihood given the document (UPR).
Candidates that both first stages return are scored once per variant; the latency per query is the
time to score one query's dense top k. A subset: `--queries` seeded test queries and `--docs`
corpus documents (every judged document of those queries plus seeded random others), so the
absolute nDCG is higher than on the full corpus; compare the rows with each other.

    python benchmarks/rerank.py --model default --queries 30 --docs 1000 --write-page

Prompt variants were compared on SciFact *train* queries (`--split train`), never tuned on test.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DOCS_BENCH_DIR, ensure_repo_on_path, machine_facts, markdown_table, text_table  # noqa: E402

ensure_repo_on_path()

import numpy as np  # noqa: E402
import torch  # noqa: E402

from egtlm_core import EgtLM, document_text  # noqa: E402
from egtlm_core.evaluation import (  # noqa: E402
    RetrievalSet,
    corpus_subset,
    read_scifact,
    score_rankings,
    subsample,
    top_k,
)
from egtlm_core.rerank import PointwiseReranker, QueryLikelihoodPrompt, RerankPrompt  # noqa: E402

PROMPTS: dict[str, Any] = {
    "yes_no": RerankPrompt(),
    "yes_no_system": RerankPrompt(
        system="You judge whether a document is relevant to a search query. Answer only yes or no."
    ),
    "query_likelihood": QueryLikelihoodPrompt(),
}
KS = (10, 20)


def words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def select(data: RetrievalSet, queries: int | None, docs: int | None, seed: int) -> RetrievalSet:
    """A seeded sample of queries (with a relevant document) and a corpus subset around their judgements."""
    qids = subsample([q for q in data.queries if any(g > 0 for g in data.qrels[q].values())], queries, seed)
    picked = RetrievalSet(data.corpus, {q: data.queries[q] for q in qids}, {q: data.qrels[q] for q in qids})
    return corpus_subset(picked, docs, seed)


def dense_rankings(lm: EgtLM, data: RetrievalSet, depth: int) -> tuple[dict[str, list[str]], float]:
    doc_ids, qids = list(data.corpus), list(data.queries)
    start = time.perf_counter()
    docs = np.asarray(lm.encode_documents([data.corpus[d] for d in doc_ids]), dtype=np.float32)
    seconds = time.perf_counter() - start
    queries = np.asarray(lm.encode_queries([data.queries[q] for q in qids]), dtype=np.float32)
    top = top_k(queries, docs, depth)
    return {q: [doc_ids[i] for i in row] for q, row in zip(qids, top, strict=True)}, seconds


def bm25_rankings(data: RetrievalSet, depth: int) -> dict[str, list[str]]:
    from rank_bm25 import BM25Okapi

    doc_ids = list(data.corpus)
    bm25 = BM25Okapi([words(document_text(data.corpus[d])) for d in doc_ids])
    out = {}
    for qid, query in data.queries.items():
        scores = bm25.get_scores(words(query))
        order = np.argsort(-scores, kind="stable")[:depth]
        out[qid] = [doc_ids[i] for i in order]
    return out


def reranked(ranking: list[str], scores: dict[str, float], k: int) -> list[str]:
    """The first stage's top k reordered by score (ties keep first-stage order), then the rest."""
    head = sorted(ranking[:k], key=lambda d: -scores[d])  # sorted() is stable
    return head + ranking[k:]


def run(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    data = select(read_scifact(args.split), args.queries, args.docs, args.seed)
    lm = EgtLM(None if args.model == "default" else args.model, torch_dtype=args.dtype)
    depth = max(args.top, 100)
    dense, corpus_s = dense_rankings(lm, data, depth)
    bm25 = bm25_rankings(data, depth)
    first = {"dense": dense, "bm25": bm25}
    rows: dict[str, dict[str, float]] = {name: score_rankings(r, data.qrels, KS) for name, r in first.items()}
    latency: dict[str, list[float]] = {}
    for variant in args.prompts:
        reranker = PointwiseReranker(
            lm.model, lm.tokenizer, PROMPTS[variant], args.batch_size, args.max_document_tokens
        )
        scores: dict[str, dict[str, float]] = {}
        latency[variant] = []
        for n, qid in enumerate(data.queries, 1):
            got = scores.setdefault(qid, {})
            for name in ("dense", "bm25"):
                todo = [d for d in first[name][qid][: args.top] if d not in got]
                start = time.perf_counter()
                values = reranker.score(data.queries[qid], [data.corpus[d] for d in todo]) if todo else []
                if name == "dense":
                    latency[variant].append(time.perf_counter() - start)
                got.update(zip(todo, (float(v) for v in values), strict=True))
            print(f"  {variant}: query {n}/{len(data.queries)}", file=sys.stderr, flush=True)
        for name, ranking in first.items():
            after = {q: reranked(ranking[q], scores[q], args.top) for q in ranking}
            rows[f"{name} + rerank ({variant})"] = score_rankings(after, data.qrels, KS)
    return {
        "args": {k: v for k, v in vars(args).items() if k != "func"},
        "queries": len(data.queries),
        "documents": len(data.corpus),
        "corpus_encode_s": corpus_s,
        "rows": rows,
        "latency_s": {v: statistics.median(t) for v, t in latency.items()},
        "latency_mean_s": {v: statistics.mean(t) for v, t in latency.items()},
        "machine": machine_facts(args.threads),
        "dtype": str(lm.dtype),
    }


def table(result: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    headers = ["system", "nDCG@10", "Δ vs first stage", "MRR@10", "recall@10", "recall@20"]
    body = []
    for name, m in result["rows"].items():
        base = result["rows"][name.split(" + ")[0]]["ndcg@10"]
        delta = f"{m['ndcg@10'] - base:+.3f}" if " + " in name else ""
        body.append(
            [
                name,
                f"{m['ndcg@10']:.3f}",
                delta,
                f"{m['mrr@10']:.3f}",
                f"{m['recall@10']:.3f}",
                f"{m['recall@20']:.3f}",
            ]
        )
    return headers, body


def page(result: dict[str, Any]) -> str:
    a, mach = result["args"], result["machine"]
    headers, body = table(result)
    lat = [[v, f"{s:.2f}", f"{result['latency_mean_s'][v]:.2f}"] for v, s in result["latency_s"].items()]
    load = tuple(round(x, 2) for x in mach["load_before"])
    cmd = " ".join(sys.argv) if sys.argv[0].endswith("rerank.py") else "python benchmarks/rerank.py"
    return f"""# Reranking with the generator: SciFact nDCG@10

`{cmd}`

**A subset**: {result["queries"]} seeded SciFact {a["split"]} queries, {result["documents"]} corpus
documents (every judged document of those queries plus seeded random others; the full corpus has
5,183). Fewer distractors make every number higher than a full-corpus one: compare rows with each
other, not with published SciFact scores. Model: `{a["model"]}` ({result["dtype"]}); rerank of the top
{a["top"]} of each first stage, documents cut to {a["max_document_tokens"]} tokens, {a["batch_size"]}
prompts per forward.

{markdown_table(headers, body)}

Rerank latency per query (scoring one query's {a["top"]} dense candidates, seconds):

{markdown_table(["prompt", "median", "mean"], lat)}

Encoding the {result["documents"]} documents took {result["corpus_encode_s"]:.1f} s.

Machine: {mach["cpu"]}, {mach["cores"]} cores, torch {mach["torch"]} on {mach["torch_threads"]}
thread(s), transformers {mach["transformers"]}, load average before {load}, {mach["date"]}.
The machine is shared: absolute times are noisy.
"""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="default", help="'default' (the packaged model) or a path")
    p.add_argument("--split", default="test", choices=("train", "test"), help="train: for choosing prompts")
    p.add_argument("--queries", type=int, default=30, help="seeded sample of queries (0: all)")
    p.add_argument("--docs", type=int, default=1000, help="corpus subset size (0: the whole corpus)")
    p.add_argument("--top", type=int, default=20, help="first-stage candidates reranked")
    p.add_argument("--prompts", nargs="+", default=["yes_no", "query_likelihood"], choices=sorted(PROMPTS))
    p.add_argument("--max-document-tokens", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--dtype", default="auto")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None, help="also write the result as JSON here")
    p.add_argument("--write-page", action="store_true", help="write docs/benchmarks/rerank.md")
    args = p.parse_args(argv)
    args.queries, args.docs = args.queries or None, args.docs or None
    result = run(args)
    print(text_table(*table(result)))
    print("latency per query (s):", {v: round(s, 2) for v, s in result["latency_s"].items()})
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, default=str))
    if args.write_page:
        (DOCS_BENCH_DIR / "rerank.md").write_text(page(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
