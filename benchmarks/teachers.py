"""Choose distillation teachers: STS-B *dev* and SciFact *train* for each teacher alone and as ensembles.

Teachers are training-time only (`egtlm_core.training.teacher_vectors`); this picks which ones the default
recipe distils, on splits that are never reported as results (STS-B dev, SciFact train claims).
An ensemble scores a pair by the mean of its members' cosines (the concatenated unit vectors / sqrt(n)
the trainer uses). SciFact is ranked on a corpus subset: every abstract the sampled train claims cite
plus seeded random others (`--docs`), so compare rows with each other, not with full-corpus numbers.
Vectors are stored in the teacher cache, so a second run only scores.

    python benchmarks/teachers.py --teachers all-minilm-l6-v2 all-mpnet-base-v2 --queries 300 --docs 1500
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DOCS_BENCH_DIR, ensure_repo_on_path, machine_facts, markdown_table, text_table  # noqa: E402

ensure_repo_on_path()

import torch  # noqa: E402

from egtlm_core import document_text  # noqa: E402
from egtlm_core.evaluation import (  # noqa: E402
    RetrievalSet,
    corpus_subset,
    read_scifact,
    read_stsb,
    score_rankings,
    spearman,
    subsample,
    top_k,
)
from egtlm_core.training import TeacherVectors, teacher_vectors  # noqa: E402


def scifact_train(queries: int | None, docs: int | None, seed: int) -> RetrievalSet:
    data = read_scifact("train")
    qids = subsample([q for q in data.queries if any(g > 0 for g in data.qrels[q].values())], queries, seed)
    picked = RetrievalSet(data.corpus, {q: data.queries[q] for q in qids}, {q: data.qrels[q] for q in qids})
    return corpus_subset(picked, docs, seed)


def scores(vectors: TeacherVectors, stsb: list[Any], scifact: RetrievalSet) -> dict[str, float]:
    a = vectors.lookup([p.text1 for p in stsb]).numpy()
    b = vectors.lookup([p.text2 for p in stsb]).numpy()
    sts = spearman((a * b).sum(1), [p.score for p in stsb])
    doc_ids, qids = list(scifact.corpus), list(scifact.queries)
    d = vectors.lookup([document_text(scifact.corpus[i]) for i in doc_ids]).numpy()
    q = vectors.lookup([scifact.queries[i] for i in qids]).numpy()
    top = top_k(q, d, 100)
    rankings = {qid: [doc_ids[i] for i in row] for qid, row in zip(qids, top, strict=True)}
    retrieval = score_rankings(rankings, scifact.qrels, (10, 100))
    return {
        "stsb_dev": float(sts),
        "scifact_train_ndcg@10": retrieval["ndcg@10"],
        **{"scifact_train_recall@100": retrieval["recall@100"]},
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    stsb = read_stsb("dev")
    scifact = scifact_train(args.queries, args.docs, args.seed)
    texts = [t for p in stsb for t in (p.text1, p.text2)]
    texts += [document_text(d) for d in scifact.corpus.values()] + list(scifact.queries.values())
    members = {n: teacher_vectors(n, texts, args.cache, args.max_length) for n in args.teachers}
    rows = {}
    for size in range(1, len(members) + 1):
        for names in itertools.combinations(members, size):
            rows[" + ".join(names)] = scores(
                TeacherVectors.ensemble([members[n] for n in names]), stsb, scifact
            )
    return {
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "func"},
        "stsb_pairs": len(stsb),
        "scifact_queries": len(scifact.queries),
        "scifact_documents": len(scifact.corpus),
        "rows": rows,
        "machine": machine_facts(args.threads),
    }


def table(result: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    headers = ["teachers", "STS-B dev Spearman", "SciFact train nDCG@10", "recall@100"]
    body = [
        [
            name,
            f"{r['stsb_dev']:.4f}",
            f"{r['scifact_train_ndcg@10']:.4f}",
            f"{r['scifact_train_recall@100']:.3f}",
        ]
        for name, r in result["rows"].items()
    ]
    return headers, body


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teachers", nargs="+", default=["all-minilm-l6-v2", "all-mpnet-base-v2"])
    p.add_argument("--cache", default="runs/teachers", help="the teacher cache (shared with training)")
    p.add_argument("--max-length", type=int, default=256, help="teacher tokens per text")
    p.add_argument("--queries", type=int, default=300, help="SciFact train claims (seeded sample)")
    p.add_argument("--docs", type=int, default=1500, help="SciFact corpus subset size")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", default=None, help="write the result here")
    p.add_argument("--write-page", action="store_true", help="write the page (--out)")
    p.add_argument("--out", type=Path, default=Path(DOCS_BENCH_DIR) / "teachers.md", help="the page's path")
    args = p.parse_args(argv)
    result = run(args)
    headers, body = table(result)
    print(text_table(headers, body))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1), encoding="utf-8")
    if args.write_page:
        m = result["machine"]
        page = (
            "# Distillation teachers: STS-B dev and SciFact train\n\n"
            f"`python benchmarks/teachers.py --teachers {' '.join(args.teachers)} --queries {args.queries} "
            f"--docs {args.docs} --max-length {args.max_length} --write-page`\n\n"
            f"{result['stsb_pairs']} STS-B *dev* pairs; {result['scifact_queries']} SciFact *train* claims "
            f"ranked over {result['scifact_documents']} abstracts (every cited one plus seeded others, "
            "so higher than a full-corpus score). An ensemble scores the mean of its members' cosines.\n\n"
            + markdown_table(headers, body)
            + f"\n\nMachine: {m.get('cpu', '?')}, {args.threads} thread(s).\n"
        )
        args.out.write_text(page, encoding="utf-8")


if __name__ == "__main__":
    main()
