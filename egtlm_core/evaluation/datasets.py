"""Readers for the evaluation sets in the shared data folder (STS-B, SciFact, XQuAD, Chinese STS-B).

Every reader returns plain dataclasses and fails loudly: a malformed row raises `DataError` naming
the file, the line and what is wrong, and nothing is skipped silently. The folder is
`$EGTLM_DATA_DIR` if set, else `../shared/data` next to the repository.
"""

from __future__ import annotations

import csv
import gzip
import json
import os
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

STSB_SPLITS: tuple[str, ...] = ("train", "dev", "test")
ZH_STSB_FILES = {"train": "STS-B.train.data", "dev": "STS-B.valid.data", "test": "STS-B.test.data"}
SCIFACT_SPLITS: tuple[str, ...] = ("train", "test")
_STSB_HEADER = ["split", "genre", "dataset", "year", "sid", "score", "sentence1", "sentence2"]


class DataError(ValueError):
    """A data file that cannot be read as the set it should hold; the message names file and line."""

    def __init__(self, path: Path | str, line: int | None, problem: str) -> None:
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {problem}")
        self.path, self.line, self.problem = Path(path), line, problem


@dataclass(frozen=True)
class ScoredPair:
    """Two texts and a gold similarity score (STS-B: 0-5)."""

    text1: str
    text2: str
    score: float


@dataclass
class RetrievalSet:
    """A BEIR-style retrieval set: corpus {id: {"title", "text"}}, queries {id: text}, graded qrels."""

    corpus: dict[str, dict[str, str]]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]


@dataclass(frozen=True)
class QAItem:
    """One extractive QA question; `paragraph` indexes `QASet.paragraphs` (its gold context)."""

    id: str
    question: str
    answers: tuple[str, ...]
    paragraph: int


@dataclass
class QASet:
    """SQuAD-format QA: the distinct paragraphs and every question pointing at its own."""

    paragraphs: list[str]
    questions: list[QAItem] = field(default_factory=list)


def data_dir(root: str | os.PathLike[str] | None = None) -> Path:
    """The data folder: `root`, else `$EGTLM_DATA_DIR`, else `../shared/data` beside the repository."""
    if root is not None:
        path = Path(root)
    elif os.environ.get("EGTLM_DATA_DIR"):
        path = Path(os.environ["EGTLM_DATA_DIR"])
    else:
        path = Path(__file__).resolve().parents[3] / "shared" / "data"
    if not path.is_dir():
        raise FileNotFoundError(
            f"Evaluation data folder {path} does not exist; pass data_dir=... or set EGTLM_DATA_DIR."
        )
    return path


def _need(path: Path) -> Path:
    if not path.is_file():
        raise FileNotFoundError(f"Evaluation data file {path} does not exist.")
    return path


def _split(split: str, valid: Sequence[str]) -> str:
    split = "dev" if split in ("valid", "validation") else split
    if split not in valid:
        raise ValueError(f"Unknown split {split!r}; expected one of {tuple(valid)}.")
    return split


def _score(text: str, path: Path, line: int, low: float = 0.0, high: float = 5.0) -> float:
    try:
        value = float(text)
    except ValueError:
        raise DataError(path, line, f"score {text!r} is not a number") from None
    if not low <= value <= high:
        raise DataError(path, line, f"score {value} is outside [{low}, {high}]")
    return value


def _text(value: Any, path: Path, line: int | None, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise DataError(path, line, f"{what} is empty or not a string: {value!r:.60}")
    return value


def read_stsb(split: str = "test", root: str | os.PathLike[str] | None = None) -> list[ScoredPair]:
    """STS Benchmark pairs of one split from `stsb_en/stsbenchmark.tsv.gz` (8 tab-separated columns).

    Quotes are literal text in this file, hence `csv.QUOTE_NONE` (the csv default would merge rows).
    """
    split = _split(split, STSB_SPLITS)
    path = _need(data_dir(root) / "stsb_en" / "stsbenchmark.tsv.gz")
    pairs = []
    with gzip.open(path, "rt", encoding="utf-8", newline="") as f:
        rows = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(rows, None)
        if header != _STSB_HEADER:
            raise DataError(path, 1, f"expected the header {_STSB_HEADER}, got {header}")
        for line, row in enumerate(rows, start=2):
            if len(row) != len(_STSB_HEADER):
                raise DataError(
                    path, line, f"expected {len(_STSB_HEADER)} tab-separated fields, got {len(row)}"
                )
            if row[0] not in STSB_SPLITS:
                raise DataError(path, line, f"unknown split {row[0]!r}")
            if row[0] == split:
                a, b = _text(row[6], path, line, "sentence1"), _text(row[7], path, line, "sentence2")
                pairs.append(ScoredPair(a, b, _score(row[5], path, line)))
    return pairs


def read_zh_stsb(split: str = "test", root: str | os.PathLike[str] | None = None) -> list[ScoredPair]:
    """Chinese STS-B (CNSD) pairs: `zh_stsb/STS-B.{train,valid,test}.data`, `text1<TAB>text2<TAB>0-5`."""
    split = _split(split, tuple(ZH_STSB_FILES))
    path = _need(data_dir(root) / "zh_stsb" / ZH_STSB_FILES[split])
    pairs = []
    with path.open(encoding="utf-8", newline="") as f:
        for line, raw in enumerate(f, start=1):
            row = raw.rstrip("\r\n").split("\t")
            if len(row) != 3:
                raise DataError(path, line, f"expected 3 tab-separated fields, got {len(row)}")
            a, b = _text(row[0], path, line, "text1"), _text(row[1], path, line, "text2")
            pairs.append(ScoredPair(a, b, _score(row[2], path, line)))
    return pairs


def _jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with path.open(encoding="utf-8") as f:
        for line, raw in enumerate(f, start=1):
            if not raw.strip():
                raise DataError(path, line, "empty line")
            try:
                row = json.loads(raw)
            except json.JSONDecodeError as err:
                raise DataError(path, line, f"invalid JSON ({err.msg})") from None
            if not isinstance(row, dict) or not isinstance(row.get("_id"), str):
                raise DataError(path, line, 'expected a JSON object with a string "_id"')
            yield line, row


def read_qrels(path: Path) -> dict[str, dict[str, int]]:
    """BEIR qrels (`query-id<TAB>corpus-id<TAB>score`, a header first) as {query: {doc: grade}}."""
    qrels: dict[str, dict[str, int]] = {}
    with _need(path).open(encoding="utf-8") as f:
        for line, raw in enumerate(f, start=1):
            row = raw.rstrip("\r\n").split("\t")
            if line == 1 and row[0] == "query-id":
                continue
            if len(row) != 3:
                raise DataError(path, line, f"expected 3 tab-separated fields, got {len(row)}")
            try:
                grade = int(row[2])
            except ValueError:
                raise DataError(path, line, f"relevance {row[2]!r} is not an integer") from None
            qrels.setdefault(row[0], {})[row[1]] = grade
    return qrels


def read_scifact(split: str = "test", root: str | os.PathLike[str] | None = None) -> RetrievalSet:
    """BEIR SciFact: the whole corpus, the queries that have qrels in `split`, and those qrels."""
    split = _split(split, SCIFACT_SPLITS)
    base = data_dir(root) / "scifact"
    corpus_path, queries_path = _need(base / "corpus.jsonl"), _need(base / "queries.jsonl")
    corpus = {}
    for line, row in _jsonl(corpus_path):
        title = row.get("title") or ""
        if not isinstance(title, str):
            raise DataError(corpus_path, line, f"title is not a string: {title!r:.60}")
        corpus[row["_id"]] = {"title": title, "text": _text(row.get("text"), corpus_path, line, "text")}
    all_queries = {
        row["_id"]: _text(row.get("text"), queries_path, line, "text") for line, row in _jsonl(queries_path)
    }
    qrels_path = base / "qrels" / f"{split}.tsv"
    qrels = read_qrels(qrels_path)
    for qid, docs in qrels.items():
        if qid not in all_queries:
            raise DataError(qrels_path, None, f"query {qid!r} is not in {queries_path.name}")
        missing = [d for d in docs if d not in corpus]
        if missing:
            raise DataError(
                qrels_path, None, f"documents {missing[:5]} of query {qid!r} are not in the corpus"
            )
    return RetrievalSet(corpus, {q: all_queries[q] for q in qrels}, qrels)


def read_xquad(
    path: str | os.PathLike[str] | None = None, root: str | os.PathLike[str] | None = None
) -> QASet:
    """XQuAD (SQuAD 1.1 format): 240 paragraphs and 1190 questions in `xquad/xquad.en.json`."""
    file = _need(Path(path) if path is not None else data_dir(root) / "xquad" / "xquad.en.json")
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DataError(file, err.lineno, f"invalid JSON ({err.msg})") from None
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise DataError(file, None, 'expected a SQuAD object {"data": [articles]}')
    qa = QASet(paragraphs=[])
    for a, article in enumerate(data["data"]):
        for p, para in enumerate(article.get("paragraphs", [])):
            where = f"data[{a}].paragraphs[{p}]"
            qa.paragraphs.append(_text(para.get("context"), file, None, f"{where}.context"))
            for q, item in enumerate(para.get("qas", [])):
                answers = tuple(x.get("text", "") for x in item.get("answers", []))
                if not answers or not all(isinstance(x, str) and x.strip() for x in answers):
                    raise DataError(file, None, f"{where}.qas[{q}] has no usable answer text")
                question = _text(item.get("question"), file, None, f"{where}.qas[{q}].question")
                qa.questions.append(
                    QAItem(str(item.get("id", f"{a}.{p}.{q}")), question, answers, len(qa.paragraphs) - 1)
                )
    return qa


def subsample(items: Sequence[T], limit: int | None, seed: int = 0) -> list[T]:
    """A seeded random sample of `limit` items in their original order (all items for None).

    A random sample, not the first rows: STS-B and SciFact are ordered by genre/id, so a prefix
    would measure one kind of text only.
    """
    if limit is None or limit >= len(items):
        return list(items)
    if limit < 1:
        raise ValueError(f"limit must be a positive integer or None, got {limit!r}.")
    keep = sorted(random.Random(seed).sample(range(len(items)), limit))
    return [items[i] for i in keep]
