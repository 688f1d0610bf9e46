"""`egtlm encode`: embed one text per line (or JSON lines) into .npy or JSON lines."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import ATTENTIONS, POOLINGS, PROMPT_FORMATS
from .io import (
    JSONL_SUFFIXES,
    UsageError,
    check_output,
    keep_nonempty,
    read_input,
    split_lines,
    texts_from_jsonl,
    write_output,
)
from .options import (
    PROGRESS_MIN_BATCHES,
    _positive_int,
    load_model,
)

if TYPE_CHECKING:
    from ..model import EgtLM


def register(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "encode",
        parents=parents,
        help="embed one text per line",
        description='Embed texts, one per line (or JSON lines with a "text" field).',
    )
    p.add_argument("--input", default="-", metavar="FILE", help="input file, or - for stdin (default)")
    p.add_argument(
        "--output",
        default="-",
        metavar="OUT",
        help="OUT.npy (float32 matrix), OUT.jsonl ({index, embedding} lines) or - for JSON lines "
        "on stdout (default)",
    )
    p.add_argument(
        "--jsonl",
        action="store_true",
        help='input is JSON lines with a "text" field (implied by a .jsonl/.ndjson input file)',
    )
    p.add_argument(
        "--skip-empty",
        action="store_true",
        help="drop blank lines instead of failing; 'index' keeps the input position",
    )
    which = p.add_mutually_exclusive_group()
    which.add_argument("--instruction", metavar="TEXT", help="task description, wrapped in the prompt format")
    which.add_argument("--query", action="store_true", help="use the configured query instruction")
    which.add_argument("--document", action="store_true", help="use the configured document instruction")
    p.add_argument("--batch-size", type=_positive_int, default=None, metavar="N")
    p.add_argument("--max-length", type=_positive_int, default=None, metavar="N", help="tokens per text")
    p.add_argument("--dim", type=_positive_int, default=None, metavar="K", help="keep the first K dimensions")
    p.add_argument("--pooling", choices=POOLINGS, default=None)
    p.add_argument("--attention", choices=ATTENTIONS, default=None, help="attention of the embedding pass")
    p.add_argument("--prompt-format", choices=[f for f in PROMPT_FORMATS if f != "custom"], default=None)
    p.add_argument("--no-progress", action="store_true", help="never show a progress bar")
    p.set_defaults(func=cmd_encode)


def resolve_instruction(m: EgtLM, args: argparse.Namespace) -> str | None:
    """The instruction prefix: the query/document one, or --instruction wrapped in the prompt format."""
    c = m.config
    if args.query:
        task = c.query_instruction
    elif args.document:
        task = c.document_instruction
    elif args.instruction is not None:
        task = args.instruction
    else:
        return None
    from ..embedding.prompts import format_instruction

    return format_instruction(task, c.prompt_format, c.prompt_template)


def cmd_encode(args: argparse.Namespace) -> int:
    check_output(args.output)
    lines = split_lines(read_input(args.input))
    jsonl = args.jsonl or Path(args.input).suffix.lower() in JSONL_SUFFIXES
    texts = texts_from_jsonl(lines) if jsonl else lines
    if not texts:
        raise UsageError(f"No texts in {'stdin' if args.input == '-' else repr(args.input)}.")
    indices = keep_nonempty(texts, args.skip_empty)
    m = load_model(args, mode="embedding")
    batch_size = args.batch_size or m.config.batch_size
    show = not args.no_progress and len(indices) > PROGRESS_MIN_BATCHES * batch_size
    vectors = m.encode(
        [texts[i] for i in indices],
        instruction=resolve_instruction(m, args),
        dim=args.dim,
        batch_size=batch_size,
        max_length=args.max_length,
        show_progress_bar=show,
    )
    write_output(args.output, indices, vectors.reshape(len(indices), -1))
    return 0
