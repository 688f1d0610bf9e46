"""Tiny synthetic copies of the shared evaluation files, written in the real formats (one writer per
set, so every test that needs data writes it the same way)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

STSB_HEADER = "split\tgenre\tdataset\tyear\tsid\tscore\tsentence1\tsentence2\n"
# A quote inside a sentence: csv's default quoting would swallow the tab and the next row.
STSB_ROWS = [
    ("train", "5.000", "A plane is taking off.", "An air plane is taking off."),
    ("train", "0.500", 'He said "hi', "A dog runs."),
    ("dev", "4.000", "A cat sat on the mat.", "A cat is on the mat."),
    ("dev", "1.000", "Paris is in France.", "The dog slept by the fire."),
    ("dev", "2.500", "The quick brown fox.", "A brown fox jumps."),
    ("test", "3.200", "Berlin is the capital of Germany.", "Paris is the capital of France."),
    ("test", "0.000", "Numbers like 12345.", "A cat sat on the mat."),
    ("test", "4.800", "The dog slept.", "The dog was sleeping."),
]

SCIFACT_CORPUS = [
    {"_id": "d1", "title": "Foxes", "text": "The quick brown fox jumps over the lazy dog."},
    {"_id": "d2", "title": "", "text": "Paris is the capital of France."},
    {"_id": "d3", "title": "Cats", "text": "A cat sat on the mat while the dog slept."},
    {"_id": "d4", "title": "RAG", "text": "Retrieval augmented generation reads documents."},
]
SCIFACT_QUERIES = [
    {"_id": "1", "text": "what is a fox?", "metadata": {}},
    {"_id": "2", "text": "capital of France", "metadata": {}},
    {"_id": "3", "text": "where did the cat sit?", "metadata": {}},
]
SCIFACT_QRELS = {"test": [("1", "d1", 1), ("2", "d2", 2), ("2", "d4", 1)], "train": [("3", "d3", 1)]}

XQUAD = {
    "version": "1.1",
    "data": [
        {
            "title": "t",
            "paragraphs": [
                {
                    "context": "Paris is the capital of France. Berlin is the capital of Germany.",
                    "qas": [
                        {
                            "id": "q1",
                            "question": "What is the capital of France?",
                            "answers": [{"text": "Paris"}],
                        },
                        {
                            "id": "q2",
                            "question": "What is Germany's capital?",
                            "answers": [{"text": "Berlin"}],
                        },
                    ],
                },
                {
                    "context": "The quick brown fox jumps over the lazy dog.",
                    "qas": [
                        {
                            "id": "q3",
                            "question": "What does the fox jump over?",
                            "answers": [{"text": "the lazy dog"}],
                        }
                    ],
                },
            ],
        }
    ],
}


def write_stsb(root: Path, rows=STSB_ROWS) -> Path:
    path = root / "stsb_en" / "stsbenchmark.tsv.gz"
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"{s}\tmain\tsrc\t2012\t{i:04d}\t{score}\t{a}\t{b}\n" for i, (s, score, a, b) in enumerate(rows)]
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write(STSB_HEADER + "".join(lines))
    return path


def write_scifact(
    root: Path,
    corpus: list[dict] = SCIFACT_CORPUS,
    queries: list[dict] = SCIFACT_QUERIES,
    qrels: dict[str, list[tuple[str, str, int]]] = SCIFACT_QRELS,
) -> Path:
    sf = root / "scifact"
    (sf / "qrels").mkdir(parents=True)
    (sf / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in corpus), encoding="utf-8")
    (sf / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries), encoding="utf-8")
    for split, rows in qrels.items():
        body = "".join(f"{q}\t{d}\t{s}\n" for q, d, s in rows)
        (sf / "qrels" / f"{split}.tsv").write_text("query-id\tcorpus-id\tscore\n" + body, encoding="utf-8")
    return sf


def write_xquad(root: Path, data: dict = XQUAD) -> Path:
    (root / "xquad").mkdir()
    path = root / "xquad" / "xquad.en.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def write_data(root: Path) -> Path:
    write_stsb(root)
    zh = root / "zh_stsb"
    zh.mkdir()
    for name in ("train", "valid", "test"):
        (zh / f"STS-B.{name}.data").write_text(
            "一个女孩在梳头。\t一个女孩在给她的头发做发型。\t4\n一群男人踢足球。\t一只猫在睡觉。\t0\n男人在弹吉他。\t一个人在弹吉他。\t3\n",
            encoding="utf-8",
        )
    write_scifact(root)
    write_xquad(root)
    return root
