"""What `egtlm index PATH` reads: text files chunked, and one document per .jsonl/.parquet record."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from egtlm_core.cli.documents import chunked_documents
from egtlm_core.cli.io import UsageError


def test_text_files_are_chunked_by_paragraph(tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text("First paragraph.\n\nSecond one.", encoding="utf-8")
    (tmp_path / "skip.bin").write_bytes(b"\x00")
    docs = chunked_documents([str(tmp_path)], max_chars=20)
    assert [(d["id"], d["text"]) for d in docs] == [
        (f"{tmp_path / 'a.md'}#0", "First paragraph."),
        (f"{tmp_path / 'a.md'}#1", "Second one."),
    ]


def test_jsonl_records_keep_their_ids_and_metadata(tmp_path: Path) -> None:
    path = tmp_path / "docs.jsonl"
    rows = [{"id": "a", "text": "Paris is in France.", "metadata": {"lang": "en"}}, {"text": "No id here."}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n", encoding="utf-8")
    docs = chunked_documents([str(path)])
    assert [d["id"] for d in docs] == ["a", f"{path}#1"]
    assert docs[0]["metadata"] == {"lang": "en", "source": str(path), "chunk": 0}
    long = tmp_path / "long.jsonl"
    long.write_text(json.dumps({"id": "b", "text": "One. " * 30 + "\n\n" + "Two. " * 30}), encoding="utf-8")
    assert [d["id"] for d in chunked_documents([str(long)], max_chars=200)] == ["b#0", "b#1"]


def test_parquet_records(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    path = tmp_path / "docs.parquet"
    pq.write_table(pa.table({"id": ["x", "y"], "text": ["Berlin is in Germany.", "Rome is in Italy."]}), path)
    docs = chunked_documents([str(path)])
    assert [(d["id"], d["text"]) for d in docs] == [
        ("x", "Berlin is in Germany."),
        ("y", "Rome is in Italy."),
    ]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"text": "ok"}\nnot json\n', "line 2 is not valid JSON"),
        ('{"id": "a"}\n', "record 1 needs a non-empty string 'text'"),
        ('{"text": "ok", "metadata": [1]}\n', "'metadata' must be an object"),
    ],
)
def test_a_bad_record_names_where_it_is(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(UsageError, match=message):
        chunked_documents([str(path)])
