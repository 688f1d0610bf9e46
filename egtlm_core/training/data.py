"""Training rows and their readers: GritLM-style JSON lines, and the public sets in the shared data folder.

Row kinds, by loss family:
    {"query": q, "pos": [p, ...], "neg": [n, ...]}      -> Triplet (InfoNCE; a text may be [task, text])
    {"text1": a, "text2": b, "score": s}                 -> ScoredPairRow (CoSENT)
    {"messages": [{"role": ..., "content": ...}, ...]}   -> ChatRow (next-token loss on assistant turns)
    {"messages": [..., {"role": "user", ...}]}           -> PromptRow (no answer yet: the anchor loss
                                                            has the base model answer it first)
    {"question": q, "documents": [d, ...], "answer": a}  -> RAGRow (block-attention distillation)
A malformed row raises `DataError` naming the file, the line and the problem; nothing is skipped.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import zip_longest
from pathlib import Path
from typing import Any

from ..embedding.prompts import document_text
from ..evaluation.datasets import DataError, data_dir, read_stsb

# A text to embed: plain (the side's configured instruction applies) or (task instruction, text).
Text = str | tuple[str, str]
QUERY, DOCUMENT = "query", "document"


@dataclass(frozen=True)
class Triplet:
    """A query, one positive and hard negatives; `symmetric` rows embed both sides as documents."""

    query: Text
    pos: Text
    negs: tuple[Text, ...] = ()
    symmetric: bool = False


@dataclass(frozen=True)
class ScoredPairRow:
    text1: str
    text2: str
    score: float


@dataclass(frozen=True)
class ChatRow:
    messages: tuple[dict[str, str], ...]


@dataclass(frozen=True)
class PromptRow:
    """A conversation ending with the user's turn; `self_answers.answer_prompts` makes it a ChatRow."""

    messages: tuple[dict[str, str], ...]


@dataclass(frozen=True)
class RAGRow:
    question: str
    documents: tuple[str, ...]
    answer: str | None = None


Row = Triplet | ScoredPairRow | ChatRow | PromptRow | RAGRow


def invalid(where: str, problem: str) -> DataError:
    """A `DataError` for `where` = "file:line" (or a field path after it)."""
    path, _, rest = where.partition(":")
    line, _, field = rest.partition(":")
    prefix = field.strip() + ": " if field else ""
    return DataError(path, int(line) if line.isdigit() else None, prefix + problem)


def _text(value: Any, where: str) -> Text:
    if isinstance(value, str) and value.strip():
        return value
    if isinstance(value, list) and len(value) == 2 and all(isinstance(v, str) for v in value) and value[1]:
        return (value[0], value[1])
    raise invalid(where, f"expected a non-empty string or [instruction, text], got {value!r:.80}.")


def _texts(value: Any, where: str, allow_empty: bool) -> list[Text]:
    """A list of texts (a bare string is a list of one); an [instruction, text] item is one text."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise invalid(where, f"expected a list of texts, got {type(value).__name__}.")
    if not value and not allow_empty:
        raise invalid(where, "the list is empty.")
    return [_text(v, f"{where}[{i}]") for i, v in enumerate(value)]


def parse_row(data: Any, where: str) -> list[Row]:
    """One JSON object -> rows (a query with several positives gives one triplet per positive)."""
    if not isinstance(data, dict):
        raise invalid(where, f"expected a JSON object, got {type(data).__name__}.")
    if "query" in data:
        query = _text(data.get("query"), f"{where}: query")
        pos = _texts(data.get("pos"), f"{where}: pos", allow_empty=False)
        neg = tuple(_texts(data.get("neg", []), f"{where}: neg", allow_empty=True))
        return [Triplet(query, p, neg) for p in pos]
    if "text1" in data:
        a, b, score = data.get("text1"), data.get("text2"), data.get("score")
        if not (isinstance(a, str) and a.strip() and isinstance(b, str) and b.strip()):
            raise invalid(where, "text1 and text2 must be non-empty strings.")
        if not isinstance(score, (int, float)) or isinstance(score, bool):
            raise invalid(where, f"score must be a number, got {score!r}.")
        return [ScoredPairRow(a, b, float(score))]
    if "messages" in data:
        messages = _messages(data["messages"], where)
        return [PromptRow(messages) if messages[-1]["role"] == "user" else ChatRow(messages)]
    if "question" in data:
        question, docs, answer = data.get("question"), data.get("documents"), data.get("answer")
        if not isinstance(question, str) or not question.strip():
            raise invalid(where, "question must be a non-empty string.")
        if not isinstance(docs, list) or not docs or not all(isinstance(d, str) and d.strip() for d in docs):
            raise invalid(where, "documents must be a non-empty list of non-empty strings.")
        if answer is not None and not isinstance(answer, str):
            raise invalid(where, "answer must be a string when given.")
        return [RAGRow(question, tuple(docs), answer)]
    raise invalid(
        where,
        "unknown row; expected keys query/pos/neg, text1/text2/score, messages, or "
        f"question/documents/answer, got {sorted(data)[:6]}.",
    )


def _messages(value: Any, where: str) -> tuple[dict[str, str], ...]:
    roles = ("system", "user", "assistant")
    ok = (
        isinstance(value, list)
        and value
        and all(
            isinstance(m, dict) and m.get("role") in roles and isinstance(m.get("content"), str)
            for m in value
        )
    )
    if not ok or not (value[-1]["role"] == "user" or any(m["role"] == "assistant" for m in value)):
        raise invalid(
            where,
            "messages must be role/content dicts with an assistant turn (a conversation to learn) or "
            "ending with a user turn (a prompt the anchor loss has the base model answer).",
        )
    return tuple({"role": m["role"], "content": m["content"]} for m in value)


def json_lines(path: str | os.PathLike[str]) -> Iterator[tuple[str, Any]]:
    """("file:line", value) of each non-blank line of a JSON lines file; invalid JSON is an error
    that names the file and line."""
    path = Path(path)
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                yield where, json.loads(line)
            except json.JSONDecodeError as e:
                raise invalid(where, f"not valid JSON ({e.msg}).") from e


def read_jsonl(path: str | os.PathLike[str]) -> list[Row]:
    """Rows of a GritLM-style JSON lines file; blank lines are allowed, malformed ones are errors."""
    rows: list[Row] = []
    for where, data in json_lines(path):
        rows += parse_row(data, where)
    return rows


# --------------------------------------------------------------------------- the shared sets


def _train(root: str | os.PathLike[str] | None) -> Path:
    return data_dir(root) / "train"


def _lines(path: Path) -> list[str]:
    if not path.is_file():
        raise DataError(path, None, f"missing; see {path.parent.parent}/README.md for the training sets.")
    return [line.rstrip("\n").strip() for line in path.open(encoding="utf-8")]


def nli_triplets(pairs: Sequence[tuple[str, str, str]]) -> list[Triplet]:
    """(premise, hypothesis, label) -> one triplet per entailment, a contradiction as hard negative."""
    entail: dict[str, list[str]] = {}
    contra: dict[str, list[str]] = {}
    for premise, hypothesis, label in pairs:
        if label == "entailment":
            entail.setdefault(premise, []).append(hypothesis)
        elif label == "contradiction":
            contra.setdefault(premise, []).append(hypothesis)
    out = []
    for premise, hyps in entail.items():
        negs = contra.get(premise, [])
        for i, h in enumerate(hyps):
            out.append(Triplet(premise, h, (negs[i % len(negs)],) if negs else (), symmetric=True))
    return out


def read_snli(
    root: str | os.PathLike[str] | None = None, splits: Sequence[str] = ("dev", "test")
) -> list[Triplet]:
    """SNLI 1.0 dev + test (e-SNLI copies), CC BY-SA 4.0."""
    base = _train(root) / "snli-dev-test-esnli"
    pairs = []
    for split in splits:
        s1, s2, labels = (_lines(base / f"{name}.{split}") for name in ("s1", "s2", "labels"))
        if not len(s1) == len(s2) == len(labels):
            raise DataError(base, None, f"s1/s2/labels.{split} have {len(s1)}/{len(s2)}/{len(labels)} lines.")
        pairs += list(zip(s1, s2, labels, strict=True))
    return nli_triplets(pairs)


def read_mnli(root: str | os.PathLike[str] | None = None) -> list[Triplet]:
    """MultiNLI dev matched (the HANS copy with labels)."""
    path = _train(root) / "mnli-dev-matched-hans" / "mnli_development_set_number_of_correct_responses.txt"
    pairs = []
    with path.open(encoding="utf-8") as f:
        for number, row in enumerate(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE), 2):
            if not row.get("premise") or not row.get("hypothesis"):
                raise DataError(path, number, "missing premise or hypothesis.")
            pairs.append((row["premise"].strip(), row["hypothesis"].strip(), row["gold_label"].strip()))
    return nli_triplets(pairs)


def read_mrpc(root: str | os.PathLike[str] | None = None) -> list[Triplet]:
    """MRPC train paraphrases (quality 1) as positive pairs."""
    path = _train(root) / "mrpc" / "msr_paraphrase_train.txt"
    out = []
    with path.open(encoding="utf-8-sig") as f:
        for number, row in enumerate(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE), 1):
            if number == 1:
                continue
            if len(row) != 5:
                raise DataError(path, number, f"expected 5 tab-separated fields, got {len(row)}.")
            if row[0] == "1":
                out.append(Triplet(row[3], row[4], symmetric=True))
    return out


def read_stsb_pairs(split: str = "train", root: str | os.PathLike[str] | None = None) -> list[ScoredPairRow]:
    """STS-B train (or dev) pairs with their 0-5 scores; never the test split."""
    if split == "test":
        raise ValueError("STS-B test is an evaluation split; train on 'train' (and 'dev' at most).")
    return [ScoredPairRow(p.text1, p.text2, p.score) for p in read_stsb(split, root)]


def nq_items(root: str | os.PathLike[str] | None, split: str) -> Iterator[dict[str, Any]]:
    folder = _train(root) / f"nq-qed-{split}"
    for path in sorted(folder.glob("*.jsonlines")):
        with path.open(encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                try:
                    item = json.loads(line)
                except json.JSONDecodeError as e:
                    raise DataError(path, number, f"not valid JSON ({e.msg}).") from e
                if not item.get("question_text") or not item.get("paragraph_text"):
                    raise DataError(path, number, "missing question_text or paragraph_text.")
                yield item


def read_nq(root: str | os.PathLike[str] | None = None, split: str = "train") -> list[Triplet]:
    """Natural Questions (QED): question -> its answer passage, CC BY-SA 3.0."""
    return [Triplet(i["question_text"], i["paragraph_text"]) for i in nq_items(root, split)]


def nq_answers(item: dict[str, Any]) -> list[str]:
    """The short answers of one NQ (QED) item, shortest first, deduplicated: `answer_text` in the
    train files, every annotator's spans (`original_nq_answers`) in the dev file."""
    texts = list(item.get("answer_text") or [])
    texts += [
        " ".join(s["string"] for s in spans) for spans in item.get("original_nq_answers") or [] if spans
    ]
    return sorted(dict.fromkeys(a.strip() for a in texts if isinstance(a, str) and a.strip()), key=len)


def read_nq_rag(root: str | os.PathLike[str] | None = None, split: str = "train") -> list[RAGRow]:
    """NQ questions with their passage and shortest short answer (None where no annotator gave
    one), for block-attention distillation and the generation probe."""
    return [
        RAGRow(i["question_text"], (i["paragraph_text"],), next(iter(nq_answers(i)), None))
        for i in nq_items(root, split)
    ]


def read_pubmedqa(root: str | os.PathLike[str] | None = None) -> list[Triplet]:
    """PubMedQA (PQA-L): question -> its abstract (contexts joined), MIT."""
    path = _train(root) / "pubmedqa-pqal" / "ori_pqal.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    return [Triplet(v["QUESTION"], " ".join(v["CONTEXTS"])) for v in data.values()]


def read_scifact_train(root: str | os.PathLike[str] | None = None) -> list[Triplet]:
    """SciFact *train* claims -> their evidence abstracts (the test queries are never read here)."""
    from ..evaluation.datasets import read_scifact

    data = read_scifact("train", root)
    out = []
    for qid, rels in data.qrels.items():
        for doc_id, grade in rels.items():
            if grade > 0 and doc_id in data.corpus:
                out.append(Triplet(data.queries[qid], document_text(data.corpus[doc_id])))
    return out


def _covid_passage(context: str, start: int) -> str:
    """The paragraph of a (paper-long) COVID-QA context that holds the answer."""
    lo = context.rfind("\n", 0, start) + 1
    hi = context.find("\n", start)
    return context[lo : hi if hi != -1 else len(context)].strip()


def read_covid_qa(root: str | os.PathLike[str] | None = None) -> list[Triplet]:
    """COVID-QA (SQuAD format over CORD-19 papers): question -> the paragraph with its answer, Apache-2.0."""
    path = _train(root) / "covid-qa" / "200423_covidQA.json"
    out = []
    for article in json.loads(path.read_text(encoding="utf-8"))["data"]:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                if not qa.get("answers"):
                    raise DataError(path, None, f"question {qa.get('id')!r} has no answer.")
                passage = _covid_passage(paragraph["context"], int(qa["answers"][0]["answer_start"]))
                if passage:
                    out.append(Triplet(qa["question"], passage))
    return out


def _tsv_triples(path: Path) -> list[tuple[str, str, str]]:
    """`text1<TAB>text2<TAB>label` lines (the CNSD copies); a line with another shape is an error."""
    rows = []
    for number, line in enumerate(_lines(path), 1):
        fields = line.split("\t")
        if len(fields) != 3:
            raise DataError(path, number, f"expected 3 tab-separated fields, got {len(fields)}.")
        rows.append((fields[0].strip(), fields[1].strip(), fields[2].strip()))
    return rows


ZH_NLI_SPLITS = {"snli": ("dev", "test"), "mnli": ("dev",)}  # zh-MNLI's test.txt has no labels


def read_zh_nli(root: str | os.PathLike[str] | None = None, name: str = "snli") -> list[Triplet]:
    """Chinese SNLI / MNLI (CNSD translations, labelled splits): research use only, not to ship."""
    base = _train(root) / f"zh-{name}-cnsd"
    return nli_triplets([t for split in ZH_NLI_SPLITS[name] for t in _tsv_triples(base / f"{split}.txt")])


def read_zh_stsb_pairs(root: str | os.PathLike[str] | None = None) -> list[ScoredPairRow]:
    """Chinese STS-B *train* pairs (research use only); the test split is evaluation-only."""
    from ..evaluation.datasets import read_zh_stsb

    return [ScoredPairRow(p.text1, p.text2, p.score) for p in read_zh_stsb("train", root)]


# Requests over MultiNLI premises, so plain-chat anchoring sees instructions as well as questions.
_REQUESTS = (
    "Rewrite this sentence in simpler words: {}",
    "Write one sentence that follows from this: {}",
    "What is this sentence about? {}",
    "Continue this text with one more sentence: {}",
)


def read_chat_prompts(root: str | os.PathLike[str] | None = None) -> list[PromptRow]:
    """Plain prompts without documents, for the base model to answer (`PromptRow`): NQ *train*
    questions, PubMedQA questions and short requests over MultiNLI dev premises, interleaved."""
    questions = [i["question_text"].strip() for i in nq_items(root, "train")]
    path = _train(root) / "pubmedqa-pqal" / "ori_pqal.json"
    medical = [v["QUESTION"].strip() for v in json.loads(path.read_text(encoding="utf-8")).values()]
    premises = list(dict.fromkeys(t.query for t in read_mnli(root) if isinstance(t.query, str)))
    requests = [_REQUESTS[i % len(_REQUESTS)].format(p) for i, p in enumerate(premises)]
    texts = [t for group in zip_longest(questions, medical, requests) for t in group if t]
    return [PromptRow(({"role": "user", "content": t},)) for t in dict.fromkeys(texts)]


def read_zh_retrieval(root: str | os.PathLike[str] | None = None) -> list[Row]:
    """2,701 Chinese {query, pos, neg} rows (research use only). Their texts are Chinese STS-B train
    sentences, a few hundred of which also occur in its test split: a zh STS-B test score after
    training on them is not clean."""
    return read_jsonl(data_dir(root) / "zh_retrieval_train" / "bge_finetune_data.jsonl")


READERS = {
    "snli": read_snli,
    "mnli": read_mnli,
    "mrpc": read_mrpc,
    "stsb": read_stsb_pairs,
    "nq": read_nq,
    "nq_rag": read_nq_rag,
    "chat_prompts": read_chat_prompts,
    "pubmedqa": read_pubmedqa,
    "scifact": read_scifact_train,
    "covid_qa": read_covid_qa,
    "zh_snli": read_zh_nli,
    "zh_mnli": lambda root=None: read_zh_nli(root, "mnli"),
    "zh_stsb": read_zh_stsb_pairs,
    "zh_retrieval": read_zh_retrieval,
}


def load_source(name: str, root: str | os.PathLike[str] | None = None) -> list[Row]:
    """A named shared set (`READERS`) or a path to a JSON lines file."""
    if name in READERS:
        return list(READERS[name](root=root))  # type: ignore[operator]
    if Path(name).suffix in (".jsonl", ".json", ".jsonlines"):
        return read_jsonl(name)
    raise ValueError(f"Unknown training set {name!r}; expected one of {sorted(READERS)} or a .jsonl path.")
