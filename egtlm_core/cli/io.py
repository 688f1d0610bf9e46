"""Texts in and vectors out for `egtlm encode`: lines or JSON lines, .npy or JSON lines.

Input problems raise `UsageError`, which the CLI prints as one line and exits with status 2.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

import numpy as np

logger = logging.getLogger(__name__)

OUTPUT_SUFFIXES = (".npy", ".jsonl")
JSONL_SUFFIXES = (".jsonl", ".ndjson")


class UsageError(ValueError):
    """A problem with the command line or its input, reported as one line (exit status 2)."""


def read_input(path: str) -> str:
    if path == "-":
        if sys.stdin.isatty():
            print("Reading texts from stdin, one per line; end with Ctrl-D.", file=sys.stderr)
        return sys.stdin.read()
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"Input file '{path}' {'is not a file' if p.exists() else 'does not exist'}.")
    try:
        return p.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        where = f"{err.reason} at byte {err.start}"
        raise UsageError(f"Input file '{path}' is not UTF-8 text ({where}).") from err


def split_lines(data: str) -> list[str]:
    """Lines of `data`, splitting only at newlines (a final newline does not start a line)."""
    lines = data.split("\n")
    if lines[-1] == "":
        lines.pop()
    return [line.removesuffix("\r") for line in lines]


def texts_from_jsonl(lines: list[str]) -> list[str]:
    """The "text" field of each JSON line; a blank line gives "" (reported as empty later)."""
    texts = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            texts.append("")
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise UsageError(f"Line {n} is not valid JSON ({err.msg}).") from err
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            raise UsageError(f'Line {n} must be a JSON object with a string "text" field, got {line:.60}.')
        texts.append(record["text"])
    return texts


def keep_nonempty(texts: list[str], skip_empty: bool) -> list[int]:
    """Positions of the texts to embed; blank ones are an error naming their line numbers, or skipped."""
    blank = [i + 1 for i, t in enumerate(texts) if not t.strip()]
    if blank and not skip_empty:
        shown = ", ".join(map(str, blank[:10])) + (f" and {len(blank) - 10} more" if len(blank) > 10 else "")
        raise UsageError(
            f"Empty text on line{'s' if len(blank) > 1 else ''} {shown}; every line is one text "
            "to embed (pass --skip-empty to drop blank lines)."
        )
    if blank:
        logger.warning("Skipped %d empty line(s): %s", len(blank), blank[:10])
    return [i for i, t in enumerate(texts) if t.strip()]


def check_output(path: str) -> None:
    """Fail before loading the model when the output cannot be written."""
    if path == "-":
        return
    p = Path(path)
    if p.suffix.lower() not in OUTPUT_SUFFIXES:
        raise UsageError(
            f"Unknown output type {p.suffix or path!r}; expected a path ending in one of "
            f"{OUTPUT_SUFFIXES}, or - for JSON lines on stdout."
        )
    if not p.parent.is_dir():
        raise UsageError(f"Output directory '{p.parent}' does not exist.")


def write_jsonl(out: TextIO, indices: Sequence[int], vectors: np.ndarray) -> None:
    for index, row in zip(indices, vectors, strict=True):
        out.write(json.dumps({"index": index, "embedding": row.tolist()}) + "\n")


def write_output(path: str, indices: Sequence[int], vectors: np.ndarray) -> None:
    if path == "-":
        write_jsonl(sys.stdout, indices, vectors)
        sys.stdout.flush()
    elif Path(path).suffix.lower() == ".npy":
        np.save(path, vectors)
    else:
        with open(path, "w", encoding="utf-8") as f:
            write_jsonl(f, indices, vectors)
    if path != "-":
        logger.info("Wrote %d x %d embeddings to %s", *vectors.shape, path)
