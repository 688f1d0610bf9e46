"""Documents for `egtlm index` / `egtlm ask`: .txt/.md files chunked, and the saved local index.

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

SUFFIXES = (".txt", ".md")
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
    """{"id": "file#n", "text", "metadata": {"source", "chunk"}} for every chunk of every file."""
    docs = []
    for path in files_in(paths):
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as err:
            raise UsageError(f"'{path}' is not UTF-8 text.") from err
        for n, chunk in enumerate(chunks(text, max_chars)):
            docs.append({"id": f"{path}#{n}", "text": chunk, "metadata": {"source": str(path), "chunk": n}})
    return docs


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
