"""Does the instruction matter? Cluster XQuAD questions by the kind of answer they expect.

Questions are labelled person / date / place / number from their gold answers (rules below), a
balanced seeded sample is embedded four ways, and KMeans (k = 4, fixed seed) clusters each:

    plain encode                       `encode(q)`, no instruction
    plain encode + instruction         `encode(q, instruction=format_instruction(INSTRUCTION))`
    answer states, neutral question    `encode(q, instruction="Answer the question.", method="answer")`
    answer states + instruction        `encode(q, instruction=INSTRUCTION, method="answer")`

and the clusters are scored against the labels (V-measure, NMI; scikit-learn).

Labels, from the first gold answer `a` (and, for names, the question's wh-word):
    date    `a` (at most 5 words) holds a year (1000-2099) or a month name
    number  otherwise `a` is a number: digits with , . % or a number word, at most 3 words
    person  otherwise `a` is a name (1-4 words, each capitalised) and the question has who/whom/whose
    place   otherwise `a` is a name and the question has "where" or "what/which
            city|country|state|region|river|continent|island|town|county|nation"
Questions matching none are left out.

    python benchmarks/inbedder.py --per-class 40 --write-page
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DOCS_BENCH_DIR, ensure_repo_on_path, machine_facts, markdown_table, text_table  # noqa: E402

ensure_repo_on_path()

import numpy as np  # noqa: E402
import torch  # noqa: E402

from egtlm_core import EgtLM, format_instruction  # noqa: E402
from egtlm_core.evaluation import read_xquad  # noqa: E402

INSTRUCTION = "What kind of answer does this question expect?"
NEUTRAL = "Answer the question."
LABELS = ("person", "date", "place", "number")
MONTHS = "january february march april may june july august september october november december".split()
NUMBER_WORDS = set(
    "one two three four five six seven eight nine ten eleven twelve twenty thirty forty fifty hundred "
    "thousand million billion dozen".split()
)
PLACE_ASK = re.compile(
    r"\b(where|(what|which)\s+(city|country|state|region|river|continent|island|town|county|nation))\b", re.I
)


def label(question: str, answer: str) -> str | None:
    """The answer kind by the rules in the module docstring, or None."""
    words = answer.strip().split()
    low = answer.lower()
    if len(words) <= 5 and (
        re.search(r"\b(1\d{3}|20\d{2})\b", answer) or any(m in low.split() for m in MONTHS)
    ):
        return "date"
    if len(words) <= 3 and (
        re.fullmatch(r"[~$]?\d[\d,.]*\s*(%|percent)?", words[0]) or words[0].lower() in NUMBER_WORDS
    ):
        return "number"
    if 1 <= len(words) <= 4 and all(w[:1].isupper() for w in words):
        q = question.lower()
        if re.search(r"\b(who|whom|whose)\b", q):
            return "person"
        if PLACE_ASK.search(question):
            return "place"
    return None


def sample(per_class: int, seed: int) -> tuple[list[str], list[str], Counter]:
    qa = read_xquad()
    by_kind: dict[str, list[str]] = {k: [] for k in LABELS}
    for item in qa.questions:
        kind = label(item.question, item.answers[0])
        if kind:
            by_kind[kind].append(item.question.strip())
    found = Counter({k: len(v) for k, v in by_kind.items()})
    rng = random.Random(seed)
    questions, labels = [], []
    for kind in LABELS:
        picked = rng.sample(by_kind[kind], min(per_class, len(by_kind[kind])))
        questions += picked
        labels += [kind] * len(picked)
    return questions, labels, found


def cluster_scores(vectors: np.ndarray, labels: list[str], seed: int) -> dict[str, float]:
    from sklearn.cluster import KMeans
    from sklearn.metrics import normalized_mutual_info_score, v_measure_score

    pred = KMeans(n_clusters=len(LABELS), random_state=seed, n_init=10).fit_predict(vectors)
    return {"v_measure": v_measure_score(labels, pred), "nmi": normalized_mutual_info_score(labels, pred)}


def run(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    questions, labels, found = sample(args.per_class, args.seed)
    lm = EgtLM(None if args.model == "default" else args.model, torch_dtype=args.dtype)
    c = lm.config
    answer = {"method": "answer", "answer_tokens": args.answer_tokens, "return_answers": True}
    systems: dict[str, Any] = {
        "plain encode": lambda: lm.encode(questions),
        "plain encode + instruction": lambda: lm.encode(
            questions, instruction=format_instruction(INSTRUCTION, c.prompt_format, c.prompt_template)
        ),
    }
    for pool in args.pools:
        systems[f"answer states ({pool}), neutral question"] = lambda p=pool: lm.encode(
            questions, instruction=NEUTRAL, pool=p, **answer
        )
        systems[f"answer states ({pool}) + instruction"] = lambda p=pool: lm.encode(
            questions, instruction=INSTRUCTION, pool=p, **answer
        )
    rows, examples = {}, {}
    for name, embed in systems.items():
        start = time.perf_counter()
        out = embed()
        vectors, answers = out if isinstance(out, tuple) else (out, None)
        rows[name] = {
            **cluster_scores(np.asarray(vectors), labels, args.seed),
            "seconds": time.perf_counter() - start,
        }
        if answers is not None:
            examples[name] = answers
        print(f"  {name}: {rows[name]}", file=sys.stderr, flush=True)
    shown = [questions.index(q) for q in random.Random(args.seed).sample(questions, 8)]
    return {
        "args": vars(args),
        "found": dict(found),
        "used": dict(Counter(labels)),
        "rows": rows,
        "examples": [
            {"question": questions[i], "label": labels[i], **{n: a[i] for n, a in examples.items()}}
            for i in shown
        ],
        "machine": machine_facts(args.threads),
        "dtype": str(lm.dtype),
    }


def table(result: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    headers = ["embedding", "V-measure", "NMI", "seconds"]
    rows = [
        [n, f"{m['v_measure']:.3f}", f"{m['nmi']:.3f}", f"{m['seconds']:.1f}"]
        for n, m in result["rows"].items()
    ]
    return headers, rows


def page(result: dict[str, Any]) -> str:
    a, mach = result["args"], result["machine"]
    headers, body = table(result)
    answer_cols = (
        [k for k in result["examples"][0] if k.startswith("answer states")] if result["examples"] else []
    )
    ex = [[e["question"], e["label"], *(repr(e[k]) for k in answer_cols)] for e in result["examples"]]
    counts = ", ".join(f"{k} {result['used'][k]} (of {result['found'][k]} found)" for k in LABELS)
    doc = (__doc__ or "").split("Labels, from", 1)[1].split("    python benchmarks", 1)[0]
    return f"""# InBedder answer-state embeddings: does the instruction matter?

`python benchmarks/inbedder.py --per-class {a["per_class"]} --answer-tokens {a["answer_tokens"]} --write-page`

XQuAD English questions labelled by the kind of answer they expect, clustered with KMeans (k = 4,
seed {a["seed"]}, 10 inits) and scored against the labels. Instruction: "{INSTRUCTION}"; the neutral
question for answer states without it: "{NEUTRAL}". Model: `{a["model"]}` ({result["dtype"]}), greedy,
{a["answer_tokens"]} answer tokens, last layer. Questions used: {counts}.

{markdown_table(headers, body)}

Labels, from{doc}
Sample answers the model generated (what the vectors are taken from):

{markdown_table(["question", "label", *answer_cols], ex)}

Machine: {mach["cpu"]}, torch {mach["torch"]} on {mach["torch_threads"]} thread(s), {mach["date"]}.
"""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="default")
    p.add_argument("--per-class", type=int, default=40, help="questions per label (fewer if fewer exist)")
    p.add_argument("--answer-tokens", type=int, default=3)
    p.add_argument("--pools", nargs="+", default=["first", "mean"], choices=("first", "mean", "last"))
    p.add_argument("--dtype", default="auto")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--write-page", action="store_true", help="write docs/benchmarks/inbedder.md")
    args = p.parse_args(argv)
    result = run(args)
    print(text_table(*table(result)))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, default=str))
    if args.write_page:
        (DOCS_BENCH_DIR / "inbedder.md").write_text(page(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
