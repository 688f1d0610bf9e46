"""Documents for `egtlm index` / `egtlm ask`: .txt/.md files chunked, records from .jsonl/.parquet
files (`{"id"?, "text", "metadata"?}` each, long texts chunked), and the saved local index.

In-process, `egtlm index` saves the ids, texts, metadata and vectors it embedded (one JSON file and
one .npy) so a later `egtlm ask` finds them; their KV states are in the model's disk store already,
so answering reuses them. Against a server (`--server URL`) the server holds both.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..loading.default_model import cache_root
from ..rag.index import DocumentIndex
from .io import UsageError

SUFFIXES = (".txt", ".md", ".jsonl", ".parquet")
RECORD_SUFFIXES = (".jsonl", ".parquet")  # one document per record, not one text per file
CHUNK_CHARS = 1200


def default_index_path() -> Path:
    return cache_root() / "cli-index" / "documents.json"


def files_in(paths: Sequence[str]) -> list[Path]:
    """The .txt/.md files named, or found under the folders named (sorted)."""
    found: list[Path] = []
    for name in paths:
        path = Path(name)
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES)
        elif path.is_file():
            found.append(path)
        else:
            raise UsageError(f"'{name}' does not exist.")
    if not found:
        raise UsageError(f"No {'/'.join(SUFFIXES)} files in {list(paths)}.")
    return found


def chunks(text: str, max_chars: int = CHUNK_CHARS) -> Iterator[str]:
    """Paragraphs packed up to `max_chars`; a longer paragraph is cut at sentence ends, else hard."""
    current = ""
    for paragraph in (p.strip() for p in text.split("\n\n")):
        if not paragraph:
            continue
        while len(paragraph) > max_chars:
            cut = paragraph.rfind(". ", 0, max_chars)
            cut = cut + 1 if cut > max_chars // 2 else max_chars
            if current:
                yield current
                current = ""
            yield paragraph[:cut].strip()
            paragraph = paragraph[cut:].strip()
        if current and len(current) + 2 + len(paragraph) > max_chars:
            yield current
            current = ""
        current = f"{current}\n\n{paragraph}" if current else paragraph
    if current:
        yield current


def chunked_documents(paths: Sequence[str], max_chars: int = CHUNK_CHARS) -> list[dict[str, Any]]:
    """{"id", "text", "metadata"} for every chunk: of each text file ("file#n", metadata source and
    chunk), and of each record of a .jsonl/.parquet file (its id, else "file#line"; "#n" added when
    its text is cut into several chunks; its metadata plus source and chunk)."""
    docs = []
    for path in files_in(paths):
        if path.suffix.lower() in RECORD_SUFFIXES:
            for record_id, text, metadata in records(path):
                pieces = list(chunks(text, max_chars))
                for n, chunk in enumerate(pieces):
                    doc_id = record_id if len(pieces) == 1 else f"{record_id}#{n}"
                    docs.append(
                        {
                            "id": doc_id,
                            "text": chunk,
                            "metadata": {**metadata, "source": str(path), "chunk": n},
                        }
                    )
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as err:
            raise UsageError(f"'{path}' is not UTF-8 text.") from err
        for n, chunk in enumerate(chunks(text, max_chars)):
            docs.append({"id": f"{path}#{n}", "text": chunk, "metadata": {"source": str(path), "chunk": n}})
    return docs


def records(path: Path) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(id, text, metadata) of each record of a .jsonl or .parquet file; a bad record names its line."""
    if path.suffix.lower() == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError as err:
            raise UsageError(
                "Reading .parquet needs pyarrow: pip install pyarrow (egtlm[ray] has it)."
            ) from err
        rows: Iterator[Any] = iter(pq.read_table(path).to_pylist())
    else:
        rows = (
            _json_line(path, n, line) for n, line in enumerate(path.read_text(encoding="utf-8").splitlines())
        )
    for n, row in enumerate(rows):
        if row is None:  # a blank line
            continue
        where = f"'{path}' record {n + 1}"
        text = row.get("text") if isinstance(row, dict) else None
        if not isinstance(text, str) or not text.strip():
            raise UsageError(f"{where} needs a non-empty string 'text'.")
        metadata = row.get("metadata") or {}
        if not isinstance(metadata, dict):
            raise UsageError(f"{where}: 'metadata' must be an object, got {type(metadata).__name__}.")
        yield str(row.get("id") or f"{path}#{n}"), text, dict(metadata)


def _json_line(path: Path, n: int, line: str) -> Any:
    if not line.strip():
        return None
    try:
        return json.loads(line)
    except json.JSONDecodeError as err:
        raise UsageError(f"'{path}' line {n + 1} is not valid JSON: {err.msg}.") from err


def save_index(index: DocumentIndex, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    ids = index.ids
    docs = [d for d in index.get(ids) if d is not None]
    path.write_text(json.dumps([{"id": d.id, "text": d.text, "metadata": d.metadata} for d in docs]))
    np.save(path.with_suffix(".npy"), index.vectors)


def load_index(path: Path, into: DocumentIndex) -> int:
    """Fill `into` from a saved index; -> documents loaded."""
    if not path.is_file():
        raise UsageError(f"No saved index at '{path}'; run `egtlm index PATH...` first (or pass --server).")
    docs = json.loads(path.read_text())
    vectors = np.load(path.with_suffix(".npy"))
    if docs:
        into.upsert(
            [d["id"] for d in docs], [d["text"] for d in docs], vectors, [d["metadata"] for d in docs]
        )
    return len(docs)
