"""GritLM-style rows: every kind parses, and a malformed row names its file, line and problem."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from egtlm_core.evaluation.datasets import DataError
from egtlm_core.training import ChatRow, RAGRow, ScoredPairRow, Triplet, load_source, read_jsonl
from egtlm_core.training.data import nli_triplets, read_stsb_pairs


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_every_row_kind(tmp_path: Path) -> None:
    rows = [
        {
            "query": ["Retrieve a passage", "what is a fox?"],
            "pos": ["A fox is an animal.", "Foxes."],
            "neg": "x",
        },
        {"text1": "a cat", "text2": "a kitten", "score": 4.5},
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]},
        {"question": "capital?", "documents": ["Paris is the capital."], "answer": "Paris"},
    ]
    got = read_jsonl(_write(tmp_path / "rows.jsonl", [json.dumps(r) for r in rows] + [""]))
    assert got[0] == Triplet(("Retrieve a passage", "what is a fox?"), "A fox is an animal.", ("x",))
    assert got[1].pos == "Foxes."  # one triplet per positive
    assert got[2] == ScoredPairRow("a cat", "a kitten", 4.5)
    assert isinstance(got[3], ChatRow) and got[3].messages[1]["content"] == "hello"
    assert got[4] == RAGRow("capital?", ("Paris is the capital.",), "Paris")
    assert load_source(str(tmp_path / "rows.jsonl")) == got


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("{not json", "not valid JSON"),
        ('{"query": "q", "pos": []}', "pos: the list is empty"),
        ('{"query": "", "pos": ["p"]}', "query: expected a non-empty string"),
        ('{"text1": "a", "text2": "b", "score": "high"}', "score must be a number"),
        ('{"messages": [{"role": "system", "content": "hi"}]}', "ending with a user turn"),
        ('{"question": "q", "documents": []}', "documents must be a non-empty list"),
        ('{"foo": 1}', "unknown row"),
        ("[1, 2]", "expected a JSON object"),
    ],
)
def test_malformed_row_names_file_and_line(tmp_path: Path, line: str, problem: str) -> None:
    good = json.dumps({"text1": "a", "text2": "b", "score": 1})
    path = _write(tmp_path / "bad.jsonl", [good, "", line, good])
    with pytest.raises(DataError, match=problem) as info:
        read_jsonl(path)
    assert info.value.line == 3 and info.value.path == path
    assert f"{path}:3" in str(info.value)


def test_nli_triplets_take_contradictions_as_hard_negatives() -> None:
    pairs = [
        ("A man plays.", "A person plays.", "entailment"),
        ("A man plays.", "A man sleeps.", "contradiction"),
        ("A man plays.", "A man plays a guitar.", "neutral"),
        ("Dogs run.", "Animals run.", "entailment"),
    ]
    got = nli_triplets(pairs)
    assert got == [
        Triplet("A man plays.", "A person plays.", ("A man sleeps.",), symmetric=True),
        Triplet("Dogs run.", "Animals run.", (), symmetric=True),
    ]


def test_stsb_test_split_is_refused(data_root: Path) -> None:
    with pytest.raises(ValueError, match="evaluation split"):
        read_stsb_pairs("test")
    train = read_stsb_pairs("train")
    assert train[0] == ScoredPairRow("A plane is taking off.", "An air plane is taking off.", 5.0)


def test_unknown_source_lists_the_names() -> None:
    with pytest.raises(ValueError, match="snli"):
        load_source("nope")


def test_zh_nli_reader_reports_a_malformed_line(tmp_path: Path) -> None:
    from egtlm_core.training.data import read_zh_nli

    folder = tmp_path / "train" / "zh-mnli-cnsd"
    folder.mkdir(parents=True)
    lines = ["一个人在跑。\t有人在动。\tentailment", "一个人在跑。\t没有人动。\tcontradiction"]
    _write(folder / "dev.txt", lines)
    assert read_zh_nli(tmp_path, "mnli") == [
        Triplet("一个人在跑。", "有人在动。", ("没有人动。",), symmetric=True)
    ]
    _write(folder / "dev.txt", [*lines, "只有两列\t没有标签"])
    with pytest.raises(DataError, match="expected 3 tab-separated fields") as info:
        read_zh_nli(tmp_path, "mnli")
    assert info.value.line == 3


def test_covid_qa_takes_the_paragraph_of_the_answer(tmp_path: Path) -> None:
    from egtlm_core.training.data import read_covid_qa

    context = "Title of the paper\nIntro about viruses.\nThe incubation period is 5 days on average.\nRefs"
    start = context.index("5 days")
    qa = {
        "question": "How long is the incubation?",
        "id": 1,
        "answers": [{"text": "5", "answer_start": start}],
    }
    data = {"data": [{"paragraphs": [{"context": context, "qas": [qa]}]}]}
    folder = tmp_path / "train" / "covid-qa"
    folder.mkdir(parents=True)
    (folder / "200423_covidQA.json").write_text(json.dumps(data), encoding="utf-8")
    assert read_covid_qa(tmp_path) == [
        Triplet("How long is the incubation?", "The incubation period is 5 days on average.")
    ]
