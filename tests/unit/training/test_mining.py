"""Hard-negative mining: negatives are never positives and come from the asked rank range (checked
against an independent ranking), an interrupted run resumes without duplicates, the output loads
through the training reader, and `egtlm mine` runs it; one end-to-end case on the default model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from egtlm_core import EgtLM
from egtlm_core.training import Triplet, mining, read_jsonl
from egtlm_core.training.mining import MiningOptions, mine_hard_negatives, read_mining_rows

SUBJECTS = ["The quick fox", "A lazy dog", "The cat", "Paris", "Berlin", "The capital", "A brown mat"]
VERBS = ["jumps over", "sat on", "slept by", "is near", "reads about"]
CORPUS = [f"{s} {v} {o.lower()}." for s in SUBJECTS for v in VERBS for o in SUBJECTS[:2]]  # 70 texts
ROWS = [
    {"query": f"Where is {SUBJECTS[i % 7].lower()}?", "pos": [CORPUS[3 * i], CORPUS[3 * i + 1]]}
    for i in range(9)
]


@pytest.fixture(scope="module")
def lm(tiny_llama_dir) -> EgtLM:
    return EgtLM(str(tiny_llama_dir), torch_dtype="float32")


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_negatives_are_ranked_in_range_and_never_positive(lm, tmp_path):
    options = MiningOptions(rank_min=5, rank_max=20, negatives=3, batch_size=4)
    result = mine_hard_negatives(lm, ROWS, CORPUS, tmp_path / "mined.jsonl", options, show_progress=False)
    assert (result.written, result.resumed_from, result.short_rows) == (len(ROWS), 0, 0)
    docs = lm.encode_documents(CORPUS)
    out = lines(tmp_path / "mined.jsonl")
    assert [r["query"] for r in out] == [r["query"] for r in ROWS]
    for row, mined in zip(ROWS, out, strict=True):
        assert mined["pos"] == row["pos"] and len(mined["neg"]) == 3 == len(set(mined["neg"]))
        assert not set(mined["neg"]) & set(row["pos"])
        order = list(np.argsort(-(docs @ lm.encode_queries(row["query"])), kind="stable"))
        ranks = [order.index(CORPUS.index(n)) + 1 for n in mined["neg"]]
        assert all(5 <= r <= 20 for r in ranks), ranks


def test_positives_in_the_range_are_skipped(lm, tmp_path):
    docs = lm.encode_documents(CORPUS)
    query = ROWS[0]["query"]
    order = list(np.argsort(-(docs @ lm.encode_queries(query)), kind="stable"))
    window = [CORPUS[i] for i in order[:4]]  # ranks 1-4, two of them made positives
    row = {"query": query, "pos": window[:2]}
    options = MiningOptions(rank_min=1, rank_max=4, negatives=4)
    result = mine_hard_negatives(lm, [row], CORPUS, tmp_path / "m.jsonl", options, show_progress=False)
    assert result.short_rows == 1
    assert sorted(lines(tmp_path / "m.jsonl")[0]["neg"]) == sorted(window[2:])


def test_an_interrupted_run_resumes_without_duplicates(lm, tmp_path, monkeypatch):
    options = MiningOptions(rank_min=3, rank_max=30, negatives=2, batch_size=2)
    whole = tmp_path / "whole.jsonl"
    mine_hard_negatives(lm, ROWS, CORPUS, whole, options, show_progress=False)

    real, calls = mining.top_k, []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    part = tmp_path / "part.jsonl"
    monkeypatch.setattr(mining, "top_k", interrupted)
    with pytest.raises(KeyboardInterrupt):
        mine_hard_negatives(lm, ROWS, CORPUS, part, options, show_progress=False)
    monkeypatch.setattr(mining, "top_k", real)
    assert len(lines(part)) == 4  # two batches of two finished
    with part.open("a") as f:
        f.write('{"query": "torn')  # a write cut off mid-line
    result = mine_hard_negatives(lm, ROWS, CORPUS, part, options, show_progress=False)
    assert (result.resumed_from, result.written) == (4, len(ROWS) - 4)
    assert part.read_text() == whole.read_text()
    again = mine_hard_negatives(lm, ROWS, CORPUS, part, options, show_progress=False)
    assert again.written == 0 and part.read_text() == whole.read_text()


def test_output_loads_through_the_training_reader(lm, tmp_path):
    out = tmp_path / "mined.jsonl"
    mine_hard_negatives(lm, ROWS, CORPUS, out, MiningOptions(negatives=2), show_progress=False)
    triplets = read_jsonl(out)
    assert len(triplets) == 2 * len(ROWS)  # one triplet per positive
    assert all(isinstance(t, Triplet) and len(t.negs) == 2 for t in triplets)
    assert triplets[0].query == ROWS[0]["query"] and triplets[1].pos == ROWS[0]["pos"][1]


def test_bad_options_and_rows_are_refused(lm, tmp_path):
    with pytest.raises(ValueError, match="rank_min"):
        MiningOptions(rank_min=50, rank_max=10)
    with pytest.raises(ValueError, match="negatives"):
        MiningOptions(negatives=0)
    with pytest.raises(ValueError, match="fewer than rank_min"):
        mine_hard_negatives(lm, ROWS, CORPUS[:5], tmp_path / "x.jsonl", show_progress=False)
    bad = tmp_path / "rows.jsonl"
    bad.write_text('{"query": "q", "pos": []}\n')
    with pytest.raises(ValueError, match="rows.jsonl:1"):
        read_mining_rows(bad)


def test_mine_command(tiny_llama_dir, tmp_path, capsys):
    from egtlm_core.cli.main import main

    rows, corpus, out = tmp_path / "rows.jsonl", tmp_path / "corpus.jsonl", tmp_path / "out.jsonl"
    rows.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    corpus.write_text("".join(json.dumps({"title": "", "text": t}) + "\n" for t in CORPUS))
    args = ["mine", "--model", str(tiny_llama_dir), "--dtype", "float32", "--input", str(rows)]
    args += [
        "--corpus",
        str(corpus),
        "--output",
        str(out),
        "--ranks",
        "2",
        "12",
        "--negatives",
        "3",
        "--no-progress",
    ]
    assert main(args) == 0
    assert f"Wrote {len(ROWS)} rows" in capsys.readouterr().out
    assert all(len(r["neg"]) == 3 for r in lines(out))
    assert main(args) == 0 and "Wrote 0 rows" in capsys.readouterr().out
    assert main([*args[:-1], "--ranks", "9", "3"]) == 2


@pytest.mark.slow
def test_default_model_mines_loadable_rows(tmp_path):
    lm = EgtLM(torch_dtype="float32")
    out = tmp_path / "mined.jsonl"
    result = mine_hard_negatives(lm, ROWS[:3], CORPUS[:30], out, MiningOptions(2, 10, 2), show_progress=False)
    assert result.written == 3 and all(len(t.negs) == 2 for t in read_jsonl(out))
