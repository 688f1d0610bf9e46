"""`egtlm chat`: answer one prompt, streaming, or chat interactively."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any, TextIO

from .io import (
    UsageError,
)
from .options import (
    _positive_int,
    load_model,
)

if TYPE_CHECKING:
    from ..model import EgtLM


def register(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "chat",
        parents=parents,
        help="answer a prompt, or chat interactively",
        description="Answer PROMPT (or a prompt piped on stdin), streaming to stdout; with "
        "neither, start an interactive chat that an empty line or EOF ends.",
    )
    p.add_argument("prompt", nargs="?", default=None, metavar="PROMPT")
    p.add_argument("--system", default=None, metavar="TEXT", help="system message")
    p.add_argument("--max-new-tokens", type=_positive_int, default=256, metavar="N")
    p.add_argument("--temperature", type=float, default=0.0, metavar="T", help="0 = greedy (default)")
    p.add_argument("--top-p", type=float, default=1.0, metavar="P")
    p.set_defaults(func=cmd_chat)


def stream_answer(m: EgtLM, messages: list[dict[str, str]], gen: dict[str, Any], out: TextIO) -> str:
    """Print the answer piece by piece as it is generated; return it whole."""
    pieces = []
    for piece in m.stream_chat(messages, **gen):
        out.write(piece)
        out.flush()
        pieces.append(piece)
    out.write("\n")
    out.flush()
    return "".join(pieces)


def repl(m: EgtLM, system: str | None, gen: dict[str, Any]) -> int:
    """Interactive chat keeping the conversation; an empty line or EOF ends it."""
    messages = [{"role": "system", "content": system}] if system else []
    print(f"Chatting with {m.source.cache_id()}; an empty line or Ctrl-D ends.", file=sys.stderr)
    while True:
        sys.stderr.write(">>> ")
        sys.stderr.flush()
        line = sys.stdin.readline()
        if not line.strip():
            return 0
        messages.append({"role": "user", "content": line.strip()})
        answer = stream_answer(m, messages, gen, sys.stdout)
        messages.append({"role": "assistant", "content": answer})


def cmd_chat(args: argparse.Namespace) -> int:
    gen = {"max_new_tokens": args.max_new_tokens, "temperature": args.temperature, "top_p": args.top_p}
    prompt = args.prompt
    if prompt is None and not sys.stdin.isatty():
        prompt = sys.stdin.read()
    if prompt is not None and not prompt.strip():
        raise UsageError("The prompt is empty.")
    m = load_model(args, mode="generative")
    if prompt is None:
        return repl(m, args.system, gen)
    messages = [{"role": "system", "content": args.system}] if args.system else []
    stream_answer(m, [*messages, {"role": "user", "content": prompt.strip()}], gen, sys.stdout)
    return 0
