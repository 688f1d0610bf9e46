"""The `egtlm` command: inspect the setup, embed texts, chat.

    egtlm info [--model PATH | --load] [--json]
    egtlm encode --input texts.txt --output vectors.npy --query
    egtlm chat "What is the capital of France?"

Results go to stdout, progress bars and logs to stderr. A user error (a bad file, a bad option value,
a ValueError/TypeError from the core) prints one line to stderr and exits with status 2; a runtime
failure (e.g. the default model could not be fetched) exits with 1. `--verbose` logs at INFO and adds
the traceback of an error.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import platform
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

import torch
import transformers
from transformers.utils import logging as hf_logging

from .. import __version__
from ..config import ATTENTIONS, POOLINGS, PROMPT_FORMATS
from ..embedding.prompts import format_instruction
from ..loading import default_model, devices
from ..model import EgtLM
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

logger = logging.getLogger(__name__)

EXIT_USAGE, EXIT_FAILURE, EXIT_INTERRUPTED = 2, 1, 130
PROGRESS_MIN_BATCHES = 4  # show a progress bar when the input spans more batches than this


# --------------------------------------------------------------------------- argument parsing


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _common_options() -> argparse.ArgumentParser:
    """Options every subcommand takes (`--verbose` also works before the subcommand)."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument(
        "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="log progress (INFO)"
    )
    return p


def _model_options() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument(
        "--model",
        default=None,
        metavar="PATH",
        help="model directory, .gguf file or hub id (default: the packaged SmolLM2-135M-Instruct)",
    )
    p.add_argument("--dtype", default="auto", help="auto (default), float32, bfloat16 or float16")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N")
    return p


def _add_info(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "info",
        parents=parents,
        help="versions, device, dtype, default model",
        description="Show versions, the device and dtype 'auto' picks, the default model's "
        "cache and, with --model or --load, the loaded model's shape.",
    )
    p.add_argument(
        "--load",
        action="store_true",
        help="load the model (the packaged default without --model; converts it on first use)",
    )
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.set_defaults(func=cmd_info)


def _add_encode(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
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


def _add_chat(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="egtlm", description="One decoder model that embeds and generates.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress (INFO)")
    parser.add_argument("--version", action="version", version=f"egtlm {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    parents = [_common_options(), _model_options()]
    _add_info(sub, parents)
    _add_encode(sub, parents)
    _add_chat(sub, parents)
    return parser


# --------------------------------------------------------------------------- info


def auto_dtype_report(device: torch.device) -> tuple[torch.dtype, str]:
    """The dtype "auto" resolves to on `device`, and why."""
    dtype = devices.resolve_dtype("auto", device)
    if device.type == "cuda":
        return dtype, "bfloat16 is always used on CUDA"
    return dtype, devices.cpu_auto_dtype_and_reason()[1]


def default_model_status() -> dict[str, Any]:
    """Where the packaged default model is cached and whether it is converted (never downloads)."""
    target = default_model.default_model_dir()
    return {
        "name": default_model.DEFAULT_MODEL_NAME,
        "package": f"{default_model.DEFAULT_PACKAGE}=={default_model.DEFAULT_VERSION}",
        "path": str(target),
        "converted": default_model.is_default_model_ready(),
    }


def describe_model(m: EgtLM) -> dict[str, Any]:
    """The loaded model's shape and settings."""
    cfg = m.model.config.get_text_config()
    return {
        "source": m.source.cache_id(),
        "architecture": type(m.model).__name__,
        "model_type": cfg.model_type,
        "layers": cfg.num_hidden_layers,
        "hidden_size": cfg.hidden_size,
        "embedding_dim": m.embedding_dim,
        "vocab_size": cfg.vocab_size,
        "max_position_embeddings": getattr(cfg, "max_position_embeddings", None),
        "chat_template": bool(getattr(m.tokenizer, "chat_template", None)),
        "parameters": sum(p.numel() for p in m.model.parameters()),
        "dtype": str(m.dtype).removeprefix("torch."),
        "device": str(m.device),
        "pooling": m.config.pooling,
        "attention": m.config.attention,
    }


def gather_info(args: argparse.Namespace) -> dict[str, Any]:
    device = devices.resolve_device(args.device)
    dtype, reason = auto_dtype_report(device)
    info: dict[str, Any] = {
        "egtlm": __version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "device": str(device),
        "auto_dtype": str(dtype).removeprefix("torch."),
        "auto_dtype_reason": reason,
        "default_model": default_model_status(),
    }
    if args.model is not None or args.load:
        info["model"] = describe_model(load_model(args, mode="unified"))
    return info


def format_info(info: dict[str, Any]) -> str:
    d = info["default_model"]
    state = "converted" if d["converted"] else f"not converted yet (the first use fetches {d['package']})"
    lines = [
        f"egtlm {info['egtlm']}, torch {info['torch']}, transformers {info['transformers']}, "
        f"python {info['python']}",
        f"device: {info['device']}",
        f"dtype 'auto': {info['auto_dtype']} ({info['auto_dtype_reason']})",
        f"default model: {d['name']} at {d['path']}: {state}",
    ]
    if "model" in info:
        m = info["model"]
        lines.append(f"model: {m.pop('source')}")
        m["parameters"] = f"{m['parameters']:,}"
        m["chat_template"] = "yes" if m["chat_template"] else "no"
        lines += [f"  {key.replace('_', ' ')}: {value}" for key, value in m.items()]
    return "\n".join(lines)


def cmd_info(args: argparse.Namespace) -> int:
    info = gather_info(args)
    print(json.dumps(info, indent=2) if args.json else format_info(info))
    return 0


# --------------------------------------------------------------------------- encode


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


# --------------------------------------------------------------------------- chat


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


# --------------------------------------------------------------------------- entry point


def load_model(args: argparse.Namespace, mode: str) -> EgtLM:
    """An `EgtLM` from the shared model options (and the encode options, where given)."""
    names = ("pooling", "attention", "prompt_format")
    settings = {k: v for k in names if (v := getattr(args, k, None)) is not None}
    logger.info("Loading %s (mode=%s)", args.model or "the default model", mode)
    return EgtLM(args.model, mode=mode, torch_dtype=args.dtype, device=args.device, **settings)


def setup_logging(verbose: bool) -> None:
    if not verbose:
        return
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("egtlm_core").setLevel(logging.INFO)


@contextlib.contextmanager
def quiet_transformers(verbose: bool) -> Iterator[None]:
    """Hide transformers' loading bars and load reports unless --verbose (restored afterwards)."""
    if verbose:
        yield
        return
    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def _report(err: BaseException, verbose: bool) -> None:
    if verbose:
        logger.error("Details:", exc_info=err)
    message = " ".join(str(err).split()) or type(err).__name__
    print(f"egtlm: error: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Run the `egtlm` command line; returns the exit status."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:  # --help, --version, or a usage error argparse already printed
        return exit_.code if isinstance(exit_.code, int) else int(exit_.code is not None)
    setup_logging(args.verbose)
    try:
        with quiet_transformers(args.verbose):
            return args.func(args)
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # e.g. `egtlm encode ... | head`: stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_FAILURE
    except (ValueError, TypeError, OSError) as err:
        _report(err, args.verbose)
        return EXIT_USAGE
    except RuntimeError as err:
        _report(err, args.verbose)
        return EXIT_FAILURE


if __name__ == "__main__":
    raise SystemExit(main())
