"""XQuAD answer quality with shared-cache reuse vs full prefill (and int8 storage, recompute, no RAG).

For each of `--n` XQuAD questions (a seeded sample of the 1190), the top-`--k` paragraphs are
retrieved from all 240 with EgtLM embeddings (`encode_documents` / `encode_queries`, cosine); if the
gold paragraph is not among them it replaces the last one (retrieval recall@k is reported on its
own). The question is then answered greedily (`--max-new-tokens`) five ways, each an `EgtLM.answer`
call on an `EgtLM` over the same shared weights with its own `cache_store`:

    full       the whole prompt prefilled (`answer(..., reuse_cache=False)`)
    reuse      stored paragraph states spliced in, every token (`answer(..., recompute_tokens=0)`)
    recompute  reuse with `recompute_tokens=--recompute` (each spliced paragraph's first tokens live)
    int8       reuse with states read from a `DiskTier(int8=True)` (dequantised on load), no recompute
    no-RAG     the same layout with no paragraphs (`answer(question, documents=[])`)

Answer metrics (SQuAD normalisation: lowercase, no punctuation/articles, single spaces): *match* =
a normalised gold answer is contained in the normalised output (GritLM's RAG metric), token F1, and
EM (near 0 for a chatty model that answers in sentences). Fidelity: the full-prefill greedy
continuation is teacher-forced through each reuse cache (the same `answer` call with a logits
processor that records each step's scores and forces the next token) and the per-position
next-token distributions are compared (top-1 agreement, mean KL(full ‖ method)); int8 is also
compared with the non-int8 reuse path. A second pass answers `--n-single` questions from the gold
paragraph alone (k = 1, the paragraph right after the fixed prefix) with reuse and full prefill and
counts identical outputs, in the run's dtype and (`--n-single-fp32`) in float32; `--fp32-check`
repeats the fidelity comparison in float32, where rounding does not blur it.

    python benchmarks/rag_quality.py                # 100 questions
    python benchmarks/rag_quality.py --n 20 --n-single 10 --threads 1

Writes docs/benchmarks/rag_quality.md and rag_quality.png.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import math
import os
import random
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from _common import machine_facts  # noqa: E402

from egtlm_core import DiskTier, EgtLM, MemoryTier  # noqa: E402
from egtlm_core.evaluation import answer_metrics, read_xquad  # noqa: E402

DOCS_DIR = ROOT / "docs" / "benchmarks"
METHODS = ("full", "reuse", "recompute", "int8", "no-RAG")
TARGET_MATCH_GAP = 2.0  # points
TARGET_INT8_BYTES = 12_000
TARGET_INT8_TOP1 = 0.99


# --- machine, data, metrics -----------------------------------------------------------------------


def tfidf_recall(contexts: list[str], questions: list[dict[str, Any]], k: int) -> float:
    """Recall@k of a plain TF-IDF retriever over the same paragraphs (a reference point only)."""

    def words(text: str) -> list[str]:
        return re.findall(r"\w+", text.lower())

    df = collections.Counter(w for c in contexts for w in set(words(c)))
    idf = {w: np.log(len(contexts) / n) for w, n in df.items()}
    vocab = {w: i for i, w in enumerate(idf)}
    mat = np.zeros((len(contexts), len(vocab)), dtype=np.float32)
    for row, c in enumerate(contexts):
        for w, n in collections.Counter(words(c)).items():
            mat[row, vocab[w]] = n * idf[w]
    mat /= np.linalg.norm(mat, axis=1, keepdims=True) + 1e-9
    hits = 0
    for q in questions:
        qv = np.zeros(len(vocab), dtype=np.float32)
        for w in words(q["question"]):
            if w in vocab:
                qv[vocab[w]] += idf[w]
        hits += q["gold"] in np.argsort(-(mat @ qv))[:k]
    return hits / len(questions)


def load_questions(path: Path | None) -> tuple[list[str], list[dict[str, Any]]]:
    """XQuAD's paragraphs and its questions in file order (`evaluation.read_xquad`)."""
    qa = read_xquad(path)
    questions = [
        {"id": q.id, "question": q.question, "answers": list(q.answers), "gold": q.paragraph}
        for q in qa.questions
    ]
    return qa.paragraphs, questions


# --- fidelity: teacher forcing through `answer` ------------------------------------------------------
class StepScores:
    """A logits processor for `EgtLM.answer`: keeps each step's scores (float32 [vocab]) and the
    prompt's token ids; given `tokens`, it forces them one per step (teacher forcing)."""

    def __init__(self, tokens: list[int] | None = None):
        self.tokens = tokens
        self.scores: list[torch.Tensor] = []
        self.prompt: list[int] = []

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if not self.scores:
            self.prompt = input_ids[0].tolist()
        self.scores.append(scores[0].float().clone())
        if self.tokens is None:
            return scores
        forced = torch.full_like(scores, float("-inf"))
        forced[:, self.tokens[len(self.scores) - 1]] = 0.0
        return forced


def full_generation(
    m: EgtLM, question: str, docs: list[str], max_new_tokens: int
) -> tuple[str, list[int], torch.Tensor, list[int]]:
    """The full-prefill greedy answer: its text, its tokens, the scores that chose each [T, vocab],
    and the prompt's token ids."""
    steps = StepScores()
    result = m.answer(
        question, docs, reuse_cache=False, max_new_tokens=max_new_tokens, logits_processor=[steps]
    )
    scores = torch.stack(steps.scores)
    return result.text, scores.argmax(-1).tolist(), scores, steps.prompt


def forced_scores(
    m: EgtLM, question: str, docs: list[str], cont: list[int], recompute: int
) -> tuple[Any, Any]:
    """Next-token scores at each position of `cont` fed through `m`'s reuse path -> (scores, result)."""
    steps = StepScores(cont)
    result = m.answer(
        question, docs, max_new_tokens=len(cont), recompute_tokens=recompute, logits_processor=[steps]
    )
    return torch.stack(steps.scores), result


def one_forward_logits(m: EgtLM, ids: list[int], cont: list[int]) -> torch.Tensor:
    """The full prefill's logits at each position of `cont`, from one forward over prompt + cont."""
    input_ids = torch.tensor([ids + cont[:-1]])
    with torch.inference_mode():
        out = m.model(
            input_ids=input_ids, attention_mask=torch.ones_like(input_ids), logits_to_keep=len(cont)
        )
    return out.logits[0].float()


def compare(ref: torch.Tensor, got: torch.Tensor) -> tuple[int, int, float]:
    """(positions where the top-1 tokens agree, positions, summed KL(ref ‖ got))."""
    lp, lq = torch.log_softmax(ref, -1), torch.log_softmax(got, -1)
    kl = (lp.exp() * (lp - lq)).sum(-1)
    return int((ref.argmax(-1) == got.argmax(-1)).sum()), ref.shape[0], float(kl.sum())


def add(agree: dict[str, list[float]], label: str, ref: torch.Tensor, got: torch.Tensor) -> None:
    a, n, kl = compare(ref, got)
    acc = agree[label]
    acc[0], acc[1], acc[2] = acc[0] + a, acc[1] + n, acc[2] + kl


# --- the run -----------------------------------------------------------------------------------------
class Stores:
    """One dtype's models over the same weights: reuse from RAM (native), from an int8 `DiskTier`
    holding the same captured states, and from RAM with int8-rounded paragraphs but the prefix
    native (a what-if store)."""

    def __init__(self, model: str | None, dtype: str, tmp: Path):
        self.ram = MemoryTier(max_bytes=8 << 30)
        self.int8 = DiskTier(tmp / "int8", int8=True)
        self.mixed_tier = MemoryTier(max_bytes=8 << 30)
        self.m = EgtLM(model, torch_dtype=dtype, cache_store=self.ram)
        self.m8 = EgtLM(model, torch_dtype=dtype, cache_store=self.int8)
        self.mixed = EgtLM(model, torch_dtype=dtype, cache_store=self.mixed_tier)
        self.paragraphs: dict[Any, tuple[Any, int]] = {}  # native key -> (int8 key, tokens)
        self.prefix_tokens = 0

    def prepare(self, docs: list[str]) -> int:
        """Capture the paragraphs once; write the same states to the int8 files and, int8-rounded,
        to the what-if store (the prefix each model captures itself on first use) -> their tokens."""
        keys = self.m.document_cache.capture(docs)
        for key in keys:
            if key in self.paragraphs:
                continue
            native = self.ram.get(key)
            key8 = dataclasses.replace(key, storage=self.int8.storage)  # the int8 store's key
            self.int8.put(key8, native)
            self.mixed_tier.put(key, self.int8.get(key8))
            self.paragraphs[key] = (key8, native.num_tokens)
        return sum(self.paragraphs[key][1] for key in keys)

    def fidelity(
        self, question: str, docs: list[str], max_new_tokens: int, recompute: int, agree: dict, floor: bool
    ) -> tuple[dict[str, str], int]:
        """Teacher-force the full-prefill greedy answer through every cache (into `agree`); -> each
        method's greedy answer and the prompt's length."""
        m, doc_tokens = self.m, self.prepare(docs)
        text, cont, full, prompt = full_generation(m, question, docs, max_new_tokens)
        runs = {
            "reuse": (m, 0),
            "recompute": (m, recompute),
            "int8": (self.m8, 0),
            "int8, native prefix": (self.mixed, 0),
        }
        forced, answers = {}, {"full": text}
        for name, (model, r) in runs.items():
            forced[name], result = forced_scores(model, question, docs, cont, r)
            if result.reuse.misses > 1:  # the prefix, once per model: anything more is a copy gone wrong
                raise RuntimeError(
                    f"{name}: {result.reuse.misses} stored segments missed; the states were not shared"
                )
            if name == "reuse":
                self.prefix_tokens = result.reused_tokens - doc_tokens
            if name in METHODS:  # its greedy answer is the full one wherever forcing changed no choice
                same = forced[name].argmax(-1).tolist() == cont
                answers[name] = (
                    text
                    if same
                    else model.answer(question, docs, max_new_tokens=max_new_tokens, recompute_tokens=r).text
                )
        pairs = [(f"{name} vs full", full, scores) for name, scores in forced.items()]
        if floor:  # noise floor: the same full prefill computed in one forward instead of step by step
            pairs.append(("full one-forward vs full", full, one_forward_logits(m, prompt, cont)))
        pairs.append(("int8 vs reuse", forced["reuse"], forced["int8"]))
        pairs.append(("int8, native prefix vs reuse", forced["reuse"], forced["int8, native prefix"]))
        for label, ref, got in pairs:
            add(agree, label, ref, got)
        return answers, len(prompt)

    def int8_bytes(self) -> tuple[float, float, int, int]:
        """(bytes/token over all int8 files, over the paragraph files only, entries, tokens)."""
        doc_tokens = sum(n for _, n in self.paragraphs.values())
        doc_bytes = sum(self.int8.path_for(key8).stat().st_size for key8, _ in self.paragraphs.values())
        tokens = doc_tokens + self.prefix_tokens
        return self.int8.stats.bytes / tokens, doc_bytes / doc_tokens, len(self.paragraphs) + 1, tokens


def single_check(
    m: EgtLM, contexts: list[str], questions: list[dict[str, Any]], max_new_tokens: int
) -> dict[str, Any]:
    """k = 1 (the gold paragraph alone, right after the fixed prefix): reuse vs full prefill.

    Returns identical-output counts and the teacher-forced top-1 agreement / KL of the reuse cache.
    """
    agree: dict[str, list[float]] = collections.defaultdict(lambda: [0, 0, 0.0])
    rows = []
    start = time.perf_counter()
    for i, q in enumerate(questions):
        docs = [contexts[q["gold"]]]
        full, cont, full_scores, _ = full_generation(m, q["question"], docs, max_new_tokens)
        scores, _ = forced_scores(m, q["question"], docs, cont, 0)
        same = scores.argmax(-1).tolist() == cont
        reused = full if same else m.answer(q["question"], docs, max_new_tokens=max_new_tokens).text
        add(agree, "k=1 reuse vs full", full_scores, scores)
        rows.append({"id": q["id"], "same": reused.strip() == full.strip(), "reuse": reused, "full": full})
        progress(i, len(questions), start, f"k=1 check, {str(m.dtype).removeprefix('torch.')}")
    return {"rows": rows, "agree": finish(agree)["k=1 reuse vs full"] if rows else None}


def finish(agree: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    return {k: {"top1": v[0] / v[1], "positions": v[1], "kl": v[2] / v[1]} for k, v in agree.items()}


def progress(i: int, total: int, start: float, what: str) -> None:
    if (i + 1) % 10 == 0 or i + 1 == total:
        el = time.perf_counter() - start
        eta = el / (i + 1) * (total - i - 1)
        print(
            f"  {what}: {i + 1}/{total}, {el:.0f} s (ETA {eta:.0f} s, load {os.getloadavg()[0]:.1f})",
            flush=True,
        )


def run(args: Any) -> dict[str, Any]:
    contexts, all_questions = load_questions(args.data)
    sample = random.Random(args.seed).sample(all_questions, args.n)
    tmp = Path(tempfile.mkdtemp(prefix="egtlm-quality-"))
    stores = Stores(args.model, args.dtype, tmp / "main")
    m = stores.m
    t0 = time.perf_counter()
    doc_vectors = m.encode_documents(contexts)
    query_vectors = m.encode_queries([q["question"] for q in sample])
    top = np.argsort(-(query_vectors @ doc_vectors.T), axis=1)[:, : args.k]
    embed_s = time.perf_counter() - t0
    recall1 = float(np.mean([q["gold"] == t[0] for q, t in zip(sample, top, strict=True)]))
    recallk = float(np.mean([q["gold"] in t for q, t in zip(sample, top, strict=True)]))
    tfidf = tfidf_recall(contexts, sample, args.k)
    print(
        f"retrieval over {len(contexts)} paragraphs: recall@1 {recall1:.2f}, recall@{args.k} {recallk:.2f} "
        f"(TF-IDF recall@{args.k} {tfidf:.2f})"
    )
    doc_lists = []
    for q, t in zip(sample, top, strict=True):
        idx = [int(x) for x in t]
        if q["gold"] not in idx:
            idx[-1] = q["gold"]  # the gold paragraph replaces the last retrieved one
        doc_lists.append(idx)

    t0 = time.perf_counter()
    no_rag = [m.answer(q["question"], [], max_new_tokens=args.max_new_tokens).text for q in sample]
    no_rag_s = time.perf_counter() - t0
    rows: list[dict[str, Any]] = []
    agree: dict[str, list[float]] = collections.defaultdict(lambda: [0, 0, 0.0])
    start = time.perf_counter()
    for i, (q, idx) in enumerate(zip(sample, doc_lists, strict=True)):
        docs = [contexts[j] for j in idx]
        outputs, prompt_tokens = stores.fidelity(
            q["question"], docs, args.max_new_tokens, args.recompute, agree, i < args.floor_n
        )
        outputs["no-RAG"] = no_rag[i]
        rows.append(
            {
                "id": q["id"],
                "replaced": q["gold"] not in [int(x) for x in top[i]],
                "gold_slot": idx.index(q["gold"]) + 1,
                "prompt_tokens": prompt_tokens,
                "outputs": outputs,
                "metrics": {name: answer_metrics(text, q["answers"]) for name, text in outputs.items()},
            }
        )
        progress(i, len(sample), start, "questions")
    main_s = time.perf_counter() - start

    # k = 1: the gold paragraph alone, right after the fixed prefix: reuse must equal full prefill.
    start = time.perf_counter()
    single = single_check(m, contexts, sample[: args.n_single], args.max_new_tokens)
    single_s = time.perf_counter() - start

    # float32: the int8 storage error without bf16's own rounding noise on top.
    start = time.perf_counter()
    agree32: dict[str, list[float]] = collections.defaultdict(lambda: [0, 0, 0.0])
    stores32 = (
        Stores(args.model, "float32", tmp / "float32") if args.fp32_check or args.n_single_fp32 else None
    )
    if stores32 is not None and args.fp32_check:
        for i, (q, idx) in enumerate(zip(sample[: args.fp32_check], doc_lists, strict=False)):
            docs = [contexts[j] for j in idx]
            stores32.fidelity(q["question"], docs, args.max_new_tokens, args.recompute, agree32, True)
            progress(i, min(args.fp32_check, len(sample)), start, "float32 fidelity")
    single32 = None
    if stores32 is not None and args.n_single_fp32:
        single32 = single_check(stores32.m, contexts, sample[: args.n_single_fp32], args.max_new_tokens)
    fp32_s = time.perf_counter() - start

    per_token, per_token_docs, entries, tokens = stores.int8_bytes()
    shutil.rmtree(tmp, ignore_errors=True)
    return {
        "dtype": str(m.dtype).removeprefix("torch."),
        "n": len(sample),
        "k": args.k,
        "recall1": recall1,
        "recallk": recallk,
        "tfidf_recallk": tfidf,
        "replaced": sum(r["replaced"] for r in rows),
        "gold_slots": collections.Counter(r["gold_slot"] for r in rows),
        "mean_prompt_tokens": statistics.mean(r["prompt_tokens"] for r in rows),
        "rows": rows,
        "agree": finish(agree),
        "agree_fp32": finish(agree32) if agree32 else {},
        "fp32_n": min(args.fp32_check, len(sample)),
        "single": single["rows"],
        "single_agree": single["agree"],
        "single32": single32["rows"] if single32 else [],
        "single32_agree": single32["agree"] if single32 else None,
        "int8_bytes_per_token": per_token,
        "int8_doc_bytes_per_token": per_token_docs,
        "int8_entries": entries,
        "int8_tokens": tokens,
        "times": {
            "embed_s": embed_s,
            "main_s": main_s,
            "single_s": single_s,
            "no_rag_s": no_rag_s,
            "fp32_s": fp32_s,
        },
    }


# --- output ------------------------------------------------------------------------------------------
def summary(res: dict[str, Any]) -> dict[str, dict[str, float]]:
    out = {}
    for name in METHODS:
        ms = [r["metrics"][name] for r in res["rows"]]
        out[name] = {key: 100 * statistics.mean(x[key] for x in ms) for key in ("match", "f1", "em")}
    return out


def paired(res: dict[str, Any], a: str, b: str) -> tuple[int, int]:
    """(questions only `a` matches, questions only `b` matches)."""
    rows = res["rows"]
    only_a = sum(r["metrics"][a]["match"] > r["metrics"][b]["match"] for r in rows)
    only_b = sum(r["metrics"][b]["match"] > r["metrics"][a]["match"] for r in rows)
    return only_a, only_b


NAMES = {
    "full": "full prefill (`reuse_cache=False`)",
    "reuse": "reuse (default)",
    "recompute": "reuse + `recompute_tokens={r}`",
    "int8": "reuse, int8 disk storage",
    "no-RAG": "no RAG (no paragraphs)",
}
FIDELITY_ROWS = (
    ("full one-forward vs full", "noise floor: full prefill in one forward vs step by step"),
    ("reuse vs full", "reuse vs full prefill"),
    ("recompute vs full", "reuse + recompute vs full prefill"),
    ("int8 vs full", "int8 reuse vs full prefill"),
    ("int8 vs reuse", "int8 reuse vs reuse"),
    ("int8, native prefix vs reuse", "int8 paragraphs + native prefix vs reuse (what-if)"),
)


def quality_table(res: dict[str, Any]) -> str:
    s = summary(res)
    lines = [
        "| method | match % | token F1 % | EM % | mean answer length |",
        "|---|---|---|---|---|",
    ]
    for name in METHODS:
        words = statistics.mean(len(r["outputs"][name].split()) for r in res["rows"])
        lines.append(
            f"| {NAMES[name].format(r=res['recompute'])} | {s[name]['match']:.1f} | {s[name]['f1']:.1f} "
            f"| {s[name]['em']:.1f} | {words:.0f} words |"
        )
    return "\n".join(lines)


def fidelity_table(res: dict[str, Any]) -> str:
    a, b = res["agree"], res.get("agree_fp32") or {}

    def cell(x: dict[str, float]) -> str:
        differ = x["positions"] - round(x["top1"] * x["positions"])
        return f"{100 * x['top1']:.2f}% ({differ} of {x['positions']} differ) | {x['kl']:.5f}"

    head = "| comparison (teacher-forced on the full-prefill answer) "
    head += f"| top-1 agreement, {res['dtype']} | mean KL, {res['dtype']} |"
    rule = "|---|---|---|"
    if b:
        head += " top-1, float32 | KL, float32 |"
        rule += "---|---|"
    lines = [head, rule]
    for key, label in FIDELITY_ROWS:
        lines.append(f"| {label} | {cell(a[key])} |" + (f" {cell(b[key])} |" if b else ""))
    return "\n".join(lines)


def plot(res: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = summary(res)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.6), gridspec_kw={"width_ratios": [3, 3]})
    xs = np.arange(len(METHODS))
    for j, (key, color) in enumerate((("match", "#1f77b4"), ("f1", "#ff7f0e"))):
        ys = [s[name][key] for name in METHODS]
        ax1.bar(xs + (j - 0.5) * 0.38, ys, 0.38, color=color, label={"match": "match", "f1": "token F1"}[key])
        for x, y in zip(xs + (j - 0.5) * 0.38, ys, strict=True):
            ax1.text(x, y + 0.8, f"{y:.1f}", ha="center", fontsize=8)
    ax1.set_xticks(xs)
    ax1.set_xticklabels(
        ["full prefill", "reuse", f"reuse +\nrecompute {res['recompute']}", "reuse,\nint8 disk", "no RAG"]
    )
    ax1.set_ylabel("% of questions / mean F1 × 100")
    ax1.set_title(
        f"XQuAD, {res['n']} questions, gold among k={res['k']} retrieved ({res['dtype']})", fontsize=10
    )
    ax1.legend(fontsize=8)
    ax1.grid(axis="y", alpha=0.3)
    keys = [k for k, _ in FIDELITY_ROWS]
    labels = [
        "noise floor\n(full vs full)",
        "reuse\nvs full",
        "recompute\nvs full",
        "int8\nvs full",
        "int8\nvs reuse",
        "int8 + native\nprefix vs reuse",
    ]
    dtypes = [(res["dtype"], res["agree"], "#1f77b4")]
    if res.get("agree_fp32"):
        dtypes.append(("float32", res["agree_fp32"], "#9467bd"))
    width = 0.8 / len(dtypes)
    lo = 100.0
    for j, (name, agree, color) in enumerate(dtypes):
        ys = [100 * agree[k]["top1"] for k in keys]
        lo = min(lo, *ys)
        pos = np.arange(len(keys)) + (j - (len(dtypes) - 1) / 2) * width
        ax2.bar(pos, ys, width, color=color, label=name if j == 0 else f"{name} (first {res['fp32_n']} q)")
        for x, y in zip(pos, ys, strict=True):
            ax2.text(x, y + 0.2, f"{y:.1f}", ha="center", fontsize=7)
    ax2.axhline(100 * TARGET_INT8_TOP1, color="gray", ls="--", lw=0.8, label="99% (int8 target)")
    ax2.set_xticks(range(len(keys)))
    ax2.set_xticklabels(labels, fontsize=8)
    ax2.set_ylim(max(0, lo - 5), 101.5)
    ax2.set_ylabel("top-1 next-token agreement, %")
    ax2.set_title("fidelity: teacher-forced on the full-prefill answer", fontsize=10)
    ax2.legend(fontsize=8, loc="lower left")
    ax2.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def sign_test(a: int, b: int) -> float:
    """Two-sided exact sign test p-value for a vs b discordant pairs."""
    n = a + b
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(a, b) + 1)) / 2**n
    return min(1.0, 2 * tail)


def slot_table(res: dict[str, Any]) -> str:
    lines = [
        "| gold paragraph in slot | questions | full match | reuse match | recompute match | int8 match |",
        "|---|---|---|---|---|---|",
    ]
    for slot in range(1, res["k"] + 1):
        rows = [r for r in res["rows"] if r["gold_slot"] == slot]
        if rows:
            counts = [
                sum(r["metrics"][name]["match"] for r in rows)
                for name in ("full", "reuse", "recompute", "int8")
            ]
            lines.append(f"| {slot} | {len(rows)} | " + " | ".join(f"{c:.0f}" for c in counts) + " |")
    return "\n".join(lines)


def single_verdict(res: dict[str, Any]) -> str:
    same = sum(x["same"] for x in res["single"])
    n = len(res["single"])
    a = res["single_agree"]
    text = (
        f"single document at the prefix gives identical outputs: {res['dtype']} "
        f"{'**met**' if same == n else '**not met**'} ({same}/{n}; teacher-forced top-1 "
        f"{100 * a['top1']:.2f}%, KL {a['kl']:.5f})"
    )
    if res["single32"]:
        same32, n32, a32 = (
            sum(x["same"] for x in res["single32"]),
            len(res["single32"]),
            res["single32_agree"],
        )
        text += (
            f"; float32 {'**met**' if same32 == n32 else '**not met**'} ({same32}/{n32}; top-1 "
            f"{100 * a32['top1']:.2f}%, KL {a32['kl']:.6f})"
        )
    return text


def write_markdown(res: dict[str, Any], info: dict[str, Any], args: Any, path: Path) -> list[str]:
    s = summary(res)
    agree, agree32 = res["agree"], res.get("agree_fp32") or {}
    gap = s["full"]["match"] - s["reuse"]["match"]
    only_reuse, only_full = paired(res, "reuse", "full")
    same = sum(x["same"] for x in res["single"])
    n_single = len(res["single"])
    int8_ok_bytes = res["int8_bytes_per_token"] <= TARGET_INT8_BYTES
    top_full = agree["int8 vs full"]["top1"]
    top_reuse = agree["int8 vs reuse"]["top1"]
    floor = agree["full one-forward vs full"]["top1"]

    def met(ok: bool) -> str:
        return "**met**" if ok else "**not met**"

    int8_line = (
        f"int8 top-1 agreement ≥ {100 * TARGET_INT8_TOP1:.0f}% ({res['dtype']}): vs the reuse path "
        f"{met(top_reuse >= TARGET_INT8_TOP1)} ({100 * top_reuse:.2f}%), vs full prefill "
        f"{met(top_full >= TARGET_INT8_TOP1)} ({100 * top_full:.2f}%, as for the non-int8 reuse path, "
        f"{100 * agree['reuse vs full']['top1']:.2f}%: that gap is the multi-document approximation, "
        "not the storage). For scale: the same full prefill "
        f"computed two mathematically equal ways agrees {100 * floor:.2f}% in {res['dtype']}"
    )
    if agree32:
        t32 = agree32["int8 vs reuse"]["top1"]
        int8_line += (
            f"; in float32 (first {res['fp32_n']} questions) int8 vs reuse is {100 * t32:.2f}% "
            f"({met(t32 >= TARGET_INT8_TOP1)}), and "
            f"{100 * agree32['int8, native prefix vs reuse']['top1']:.2f}% with the prefix entry kept native"
        )
    verdicts = [
        f"match within {TARGET_MATCH_GAP:.0f} points of full prefill: {met(gap <= TARGET_MATCH_GAP)} "
        f"(reuse {s['reuse']['match']:.1f} vs full {s['full']['match']:.1f}, "
        f"difference {s['reuse']['match'] - s['full']['match'] + 0.0:+.1f} points; "
        f"recompute {s['recompute']['match']:.1f}, "
        f"int8 {s['int8']['match']:.1f})",
        single_verdict(res),
        f"int8 ≤ {TARGET_INT8_BYTES:,} bytes/token: {met(int8_ok_bytes)} "
        f"({res['int8_bytes_per_token']:,.0f} over all entries, {res['int8_doc_bytes_per_token']:,.0f} over "
        "the paragraphs)",
        int8_line + ".",
    ]
    slots = res["gold_slots"]
    t = res["times"]
    examples = [r for r in res["rows"] if r["outputs"]["reuse"] != r["outputs"]["full"]][:3]
    out = [
        "# RAG answer quality: shared-cache reuse vs full prefill (XQuAD)",
        "",
        "Produced by `benchmarks/rag_quality.py`. "
        f"Machine: {info['cpu']}, {info['cores']} cores, torch {info['torch']} "
        f"(`torch.set_num_threads({info['torch_threads']})`), transformers {info['transformers']}, "
        f"Python {info['python']}; {info['date']}; model "
        f"{args.model or 'SmolLM2-135M-Instruct (the default)'}, "
        f"dtype {res['dtype']}" + (" (auto)" if args.dtype == "auto" else "") + ". "
        f"Run time: {t['embed_s']:.0f} s retrieval embeddings, {t['no_rag_s']:.0f} s no-RAG answers, "
        f"{t['main_s']:.0f} s for the {res['n']} questions (the full answer, four teacher-forced "
        f"passes, and a greedy answer where forcing changed a choice), {t['single_s']:.0f} s for the "
        f"k = 1 check, {t['fp32_s']:.0f} s for the float32 passes; load average before/after "
        f"{info['load_before'][0]:.1f} / {info['load_after'][0]:.1f} (other jobs shared the machine).",
        "",
        "## Setup",
        "",
        f"- {res['n']} XQuAD (English) questions, a seeded random sample (seed {args.seed}) of the 1190.",
        f"- Retrieval: all 240 XQuAD paragraphs embedded with `encode_documents`, questions with "
        f"`encode_queries`, cosine top-{res['k']}. Retrieval itself: **recall@1 {100 * res['recall1']:.0f}%, "
        f"recall@{res['k']} {100 * res['recallk']:.0f}%** (the untrained default model's embeddings; a "
        f"plain TF-IDF retriever reaches {100 * res['tfidf_recallk']:.0f}% recall@{res['k']} here). "
        f"Where the gold paragraph was missing ({res['replaced']} of {res['n']} questions) it replaced "
        f"the last retrieved one, so every prompt holds the gold paragraph among {res['k']}. Gold slot "
        "(1 = right after the fixed prefix, the one exact slot): "
        + ", ".join(f"{k}: {slots[k]}" for k in sorted(slots))
        + f" (slot {res['k']} is over-represented because a missing gold paragraph replaces the "
        f"last one). Mean prompt: {res['mean_prompt_tokens']:.0f} tokens.",
        f"- Greedy decoding, `max_new_tokens={args.max_new_tokens}`, `EgtLM.answer`'s RAG layout "
        "(its system prompt, `Documents:`, paragraphs separated by a blank line, question). *no RAG*: "
        "the same layout with no paragraphs (`answer(question, documents=[])`).",
        "- *full* is `answer(reuse_cache=False)`; a logits processor passed to it "
        "(`answer(..., logits_processor=[...])`) keeps the scores that chose each token, for the "
        "fidelity numbers. *reuse*, *recompute* and *int8* are `answer(...)` calls on `EgtLM`s over "
        "the same weights with `cache_store=` a RAM tier and a `DiskTier(int8=True)` in a temp dir "
        "holding the same captured states (`document_cache.capture`, the int8 files written from them).",
        "- Answer metrics: SQuAD normalisation (lowercase, strip punctuation and articles, collapse "
        "whitespace). *match*: a normalised gold answer is contained in the normalised output "
        "(GritLM's RAG metric). *token F1*: SQuAD F1 (max over gold answers). *EM* is reported but "
        'is ~0 by design: this chatty model answers in sentences ("The basic unit ... is a '
        'commune (gmina)."), never with the bare span.',
        "- Fidelity: the full-prefill greedy answer is teacher-forced through each cache (the same "
        "`answer` call with a logits processor that keeps each step's scores and forces the next "
        "token; where no choice changed, that pass is also the method's greedy answer); at every "
        "answer position the next-token distributions are compared: top-1 agreement and mean "
        "KL(reference ‖ other). The *noise floor* row (first "
        f"{min(args.floor_n, res['n'])} questions) compares the full prefill with itself "
        "(one forward over prompt + answer vs the step-by-step logits of `generate`): in bf16 two "
        "mathematically equal computations already disagree at near-tied positions.",
        "",
        "## Results",
        "",
        quality_table(res),
        "",
        slot_table(res),
        "",
        f"Paired: reuse matches where full prefill does not on {only_reuse} questions, the reverse "
        f"on {only_full} (one question = {100 / res['n']:.0f} point{'s' if res['n'] < 100 else ''}; "
        f"two-sided sign test p = {sign_test(only_reuse, only_full):.2f}: the difference in match "
        "is noise at this n).",
        "",
        fidelity_table(res),
        "",
        f"int8 storage: {res['int8_bytes_per_token']:,.0f} bytes per token over all "
        f"{res['int8_entries']} entries ({res['int8_tokens']:,} tokens; file sizes as written, "
        f"per-channel float32 scales and headers included), {res['int8_doc_bytes_per_token']:,.0f} "
        "over the paragraph files alone (the short prefix entry carries a whole set of scales for "
        f"few tokens). Native {res['dtype']} is "
        + ("23,040" if res["dtype"] in ("bfloat16", "float16") else "46,080")
        + " bytes per token.",
        "",
        f"Single document (k = 1, the gold paragraph alone, {n_single} questions): reuse and full "
        f"prefill gave identical answers on **{same}/{n_single}** in {res['dtype']}"
        + (
            f" and **{sum(x['same'] for x in res['single32'])}/{len(res['single32'])}** in float32"
            if res["single32"]
            else ""
        )
        + ". The stored states are mathematically the full prefill's (float32: equal to ~3e-5), "
        "but they come from a prefill in two chunks (the prefix, then the paragraph after it) "
        "while the baseline prefills in one; bf16 rounds the two differently (layer 0 identical, "
        "deeper layers a few bf16 steps apart), and greedy decoding turns a near-tie into another "
        "continuation — the same rate at which the full prefill disagrees with itself above.",
        "",
        "![quality per method](rag_quality.png)",
        "",
        "## Targets",
        "",
        *[f"- {v}" for v in verdicts],
        "",
        "## Reading the numbers",
        "",
        "- A paragraph in the first slot is exact (captured right after the same fixed prefix); a "
        "paragraph in a later slot is re-rotated exactly (RoPE) but never attended to the paragraphs "
        "before it — the approximation every multi-document cache method makes (TurboRAG, "
        "CacheBlend, EPIC). That is where the reuse-vs-full disagreements and KL come from; answers "
        "change wording more often than they change correctness. `recompute_tokens` recomputes the "
        "first tokens of every spliced paragraph with full attention (EPIC-style).",
        "- int8 adds per-channel quantisation error (about 0.5% relative on keys, 0.9% on values) "
        "on top of reuse; compared with the non-int8 reuse path it isolates the storage error, "
        f"which in {res['dtype']} is of the size of the rounding noise floor and in float32 "
        "shows on its own. The what-if row keeps the shared prefix entry (system prompt + "
        "header, one per layout, a few KB) native: "
        + (
            f"float32 KL {agree32['int8 vs reuse']['kl']:.5f} → "
            f"{agree32['int8, native prefix vs reuse']['kl']:.5f}, top-1 "
            f"{100 * agree32['int8 vs reuse']['top1']:.2f}% → "
            f"{100 * agree32['int8, native prefix vs reuse']['top1']:.2f}%"
            if agree32
            else f"KL {agree['int8 vs reuse']['kl']:.5f} → {agree['int8, native prefix vs reuse']['kl']:.5f}"
        )
        + " — the prefix is attended by every token, so its quantisation error counts more than a "
        "paragraph's. A tier policy of int8 for paragraphs and native storage for the prefix would "
        "cost nothing measurable in bytes.",
        "- The no-RAG row is the floor: what the model knows without the paragraphs.",
    ]
    if examples:
        out += ["", "Examples where reuse and full prefill answered differently:", ""]
        for r in examples:
            out.append(
                f'- `{r["id"]}` full: "{r["outputs"]["full"].strip()[:160]}" — reuse: '
                f'"{r["outputs"]["reuse"].strip()[:160]}"'
            )
    out += [
        "",
        "## Reproduce",
        "",
        "```",
        ". .venv/bin/activate",
        f"python benchmarks/rag_quality.py --n {res['n']} --n-single {n_single} --k {res['k']} "
        f"--recompute {res['recompute']} --max-new-tokens {args.max_new_tokens} "
        f"--fp32-check {args.fp32_check} --n-single-fp32 {args.n_single_fp32}"
        + (f" --threads {args.threads}" if args.threads else ""),
        "```",
        "",
        f"This run took {sum(t.values()) / 60:.0f} min in all. Use `--n` (and `--n-single`, "
        "`--n-single-fp32`, `--fp32-check`) to scale it: about "
        f"{t['main_s'] / res['n']:.1f} s per question for the five methods on this machine under the "
        "load above; e.g. `--n 40 --n-single 10 --n-single-fp32 10 --fp32-check 5` stays near 10 "
        "minutes.",
        "",
    ]
    path.write_text("\n".join(out), encoding="utf-8")
    return verdicts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default=None, help="model name or path (default: the packaged one)")
    parser.add_argument("--data", type=Path, default=None, help="xquad.en.json (default: the shared data)")
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--n-single", type=int, default=30)
    parser.add_argument("--n-single-fp32", type=int, default=30, help="the k=1 check again in float32")
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--recompute", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--dtype", default="auto")
    parser.add_argument(
        "--floor-n", type=int, default=30, help="questions for the noise-floor control (a full forward each)"
    )
    parser.add_argument(
        "--fp32-check", type=int, default=20, help="questions for the float32 fidelity pass (0: skip)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--out", type=Path, default=DOCS_DIR)
    parser.add_argument("--json", type=Path, default=None, help="also write the raw results here")
    parser.add_argument("--render", type=Path, default=None, help="only re-write the page from a --json file")
    args = parser.parse_args(argv)
    if args.render:
        saved = json.loads(args.render.read_text())
        res = saved["results"]
        res["gold_slots"] = {int(k): v for k, v in res["gold_slots"].items()}
        plot(res, args.out / "rag_quality.png")
        print("\n".join(write_markdown(res, saved["machine"], args, args.out / "rag_quality.md")))
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    info = machine_facts(torch.get_num_threads())
    res = run(args)
    res["recompute"] = args.recompute
    info["load_after"] = os.getloadavg()
    print()
    print(quality_table(res))
    print(fidelity_table(res))
    args.out.mkdir(parents=True, exist_ok=True)
    plot(res, args.out / "rag_quality.png")
    verdicts = write_markdown(res, info, args, args.out / "rag_quality.md")
    if args.json:
        args.json.write_text(json.dumps({"machine": info, "results": res}, indent=1, default=str))
    print("\n".join(verdicts))
    print(f"Wrote {args.out / 'rag_quality.md'}")


if __name__ == "__main__":
    main()
