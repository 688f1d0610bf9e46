"""`egtlm mine`: hard negatives for {query, pos} rows, ranked by the current model, as training rows.

    egtlm mine --input rows.jsonl --corpus corpus.jsonl --output mined.jsonl --ranks 10 100 --negatives 4

The corpus is one text per line, or JSON lines with "text" (and an optional "title", as BEIR's
corpus.jsonl). Running the same command again after an interruption resumes where it stopped.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from .io import JSONL_SUFFIXES, UsageError, read_input, split_lines
from .options import _positive_int, load_model


def register(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "mine",
        parents=parents,
        help="mine hard negatives for {query, pos} rows with the current model",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--input", required=True, metavar="ROWS.jsonl", help='rows with "query" and "pos"')
    p.add_argument("--corpus", required=True, metavar="FILE", help="documents: text lines or JSON lines")
    p.add_argument("--output", required=True, metavar="OUT.jsonl", help="written (appended on resume)")
    p.add_argument(
        "--ranks",
        nargs=2,
        type=_positive_int,
        default=(10, 100),
        metavar=("MIN", "MAX"),
        help="ranks negatives are sampled from (default: 10 100)",
    )
    p.add_argument("--negatives", type=_positive_int, default=4, metavar="N", help="per row (default 4)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=_positive_int, default=64, metavar="N", help="queries per step")
    p.add_argument("--no-progress", action="store_true", help="never show a progress bar")
    p.set_defaults(func=cmd_mine)


def read_corpus(path: str) -> list[Any]:
    """Corpus documents: JSON lines ({"text", "title"?}) for a .jsonl/.ndjson file, else text lines."""
    lines = [line for line in split_lines(read_input(path)) if line.strip()]
    if Path(path).suffix.lower() not in JSONL_SUFFIXES:
        return lines
    docs = []
    for n, line in enumerate(lines, 1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise UsageError(f"{path}: line {n} is not valid JSON ({err.msg}).") from err
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            raise UsageError(f'{path}: line {n} needs a string "text" field.')
        docs.append({"title": str(record.get("title") or ""), "text": record["text"]})
    return docs


def cmd_mine(args: argparse.Namespace) -> int:
    from ..training.mining import MiningOptions, mine_hard_negatives, read_mining_rows

    if not Path(args.input).is_file():
        raise UsageError(f"Input file '{args.input}' does not exist.")
    options = MiningOptions(args.ranks[0], args.ranks[1], args.negatives, args.seed, args.batch_size)
    rows = read_mining_rows(args.input)
    corpus = read_corpus(args.corpus)
    lm = load_model(args, mode="embedding")
    result = mine_hard_negatives(lm, rows, corpus, args.output, options, show_progress=not args.no_progress)
    print(
        f"Wrote {result.written} rows to {result.output} ({result.resumed_from} were already there; "
        f"{result.short_rows} with fewer than {options.negatives} negatives)."
    )
    return 0
