from __future__ import annotations

import json

import pytest
from eval_data import STSB_ROWS, write_stsb

from egtlm_core.evaluation import DataError, read_scifact, read_stsb, read_xquad, read_zh_stsb, subsample
from egtlm_core.evaluation.datasets import data_dir


def test_stsb_splits_keep_quotes_literal(data_root):
    train = read_stsb("train", root=data_root)
    assert [(p.text1, p.score) for p in train] == [("A plane is taking off.", 5.0), ('He said "hi', 0.5)]
    assert len(read_stsb("dev", root=data_root)) == 3
    assert len(read_stsb("validation", root=data_root)) == 3
    assert [p.text2 for p in read_stsb("test", root=data_root)][-1] == "The dog was sleeping."


def test_unknown_split_lists_the_valid_ones(data_root):
    with pytest.raises(ValueError, match=r"'eval'.*\('train', 'dev', 'test'\)"):
        read_stsb("eval", root=data_root)


def test_stsb_bad_score_names_file_and_line(tmp_path):
    rows = [*STSB_ROWS[:2], ("test", "high", "a", "b")]
    write_stsb(tmp_path, rows)
    with pytest.raises(DataError, match=r"stsbenchmark\.tsv\.gz:4: score 'high' is not a number") as err:
        read_stsb("test", root=tmp_path)
    assert err.value.line == 4


def test_stsb_score_out_of_range_and_wrong_field_count(tmp_path):
    write_stsb(tmp_path, [("test", "7.0", "a", "b")])
    with pytest.raises(DataError, match=r":2: score 7.0 is outside"):
        read_stsb("test", root=tmp_path)
    write_stsb(tmp_path, [("test", "1.0", "a\tx", "b")])
    with pytest.raises(DataError, match=r":2: expected 8 tab-separated fields, got 9"):
        read_stsb("test", root=tmp_path)


def test_zh_stsb(data_root):
    pairs = read_zh_stsb("test", root=data_root)
    assert [p.score for p in pairs] == [4.0, 0.0, 3.0]
    assert read_zh_stsb("dev", root=data_root) == read_zh_stsb("valid", root=data_root)
    (data_root / "zh_stsb" / "STS-B.test.data").write_text("a\tb\t1\nonly two\tfields\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"STS-B\.test\.data:2: expected 3 tab-separated fields, got 2"):
        read_zh_stsb("test", root=data_root)


def test_scifact_queries_restricted_to_split_qrels(data_root):
    test = read_scifact("test", root=data_root)
    assert sorted(test.queries) == ["1", "2"]
    assert test.qrels == {"1": {"d1": 1}, "2": {"d2": 2, "d4": 1}}
    assert test.corpus["d1"] == {"title": "Foxes", "text": "The quick brown fox jumps over the lazy dog."}
    assert sorted(read_scifact("train", root=data_root).queries) == ["3"]


def test_scifact_malformed_rows(data_root):
    corpus = data_root / "scifact" / "corpus.jsonl"
    corpus.write_text(corpus.read_text() + "{not json\n")
    with pytest.raises(DataError, match=r"corpus\.jsonl:5: invalid JSON"):
        read_scifact(root=data_root)
    corpus.write_text(json.dumps({"_id": "d1", "text": ""}) + "\n")
    with pytest.raises(DataError, match=r"corpus\.jsonl:1: text is empty"):
        read_scifact(root=data_root)


def test_scifact_qrels_pointing_nowhere(data_root):
    qrels = data_root / "scifact" / "qrels" / "test.tsv"
    qrels.write_text("query-id\tcorpus-id\tscore\n1\tnope\t1\n")
    with pytest.raises(DataError, match=r"documents \['nope'\] of query '1'"):
        read_scifact(root=data_root)
    qrels.write_text("query-id\tcorpus-id\tscore\n1\td1\tyes\n")
    with pytest.raises(DataError, match=r"test\.tsv:2: relevance 'yes' is not an integer"):
        read_scifact(root=data_root)


def test_xquad_paragraph_indices(data_root):
    qa = read_xquad(root=data_root)
    assert len(qa.paragraphs) == 2
    assert [(q.id, q.paragraph, q.answers) for q in qa.questions] == [
        ("q1", 0, ("Paris",)),
        ("q2", 0, ("Berlin",)),
        ("q3", 1, ("the lazy dog",)),
    ]


def test_xquad_question_without_answer(data_root):
    path = data_root / "xquad" / "xquad.en.json"
    data = json.loads(path.read_text())
    data["data"][0]["paragraphs"][1]["qas"][0]["answers"] = []
    path.write_text(json.dumps(data))
    with pytest.raises(DataError, match=r"data\[0\]\.paragraphs\[1\]\.qas\[0\] has no usable answer"):
        read_xquad(root=data_root)
    path.write_text("{\n  oops")
    with pytest.raises(DataError, match=r"xquad\.en\.json:2: invalid JSON"):
        read_xquad(root=data_root)


def test_data_dir_from_environment(data_root, monkeypatch, tmp_path):
    monkeypatch.setenv("EGTLM_DATA_DIR", str(data_root))
    assert data_dir() == data_root
    with pytest.raises(FileNotFoundError, match="EGTLM_DATA_DIR"):
        data_dir(tmp_path / "missing")


def test_subsample_is_seeded_ordered_and_complete_for_none():
    items = list(range(100))
    a = subsample(items, 10, seed=1)
    assert a == sorted(a) and len(set(a)) == 10 and a == subsample(items, 10, seed=1)
    assert a != subsample(items, 10, seed=2)
    assert subsample(items, None) == items and subsample(items, 500) == items
    with pytest.raises(ValueError, match="positive"):
        subsample(items, 0)
