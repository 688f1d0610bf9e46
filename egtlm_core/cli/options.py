"""Options and helpers every `egtlm` subcommand shares: exit codes, number parsing, model loading."""

from __future__ import annotations

import argparse
import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..model import EgtLM

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
    add_loading_options(p)
    return p


def add_loading_options(p: argparse.ArgumentParser) -> None:
    """How a model loads: dtype, weights, device (also for `egtlm eval`, whose MODEL is positional)."""
    p.add_argument("--dtype", default="auto", help="auto (default), float32, bfloat16 or float16")
    p.add_argument(
        "--weights",
        default="native",
        choices=["native", "int8"],
        help="int8: weight-only int8 linears, faster decoding on CPUs with a fast int8 kernel (opt-in)",
    )
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N")


def load_model(args: argparse.Namespace, mode: str, **extra: Any) -> EgtLM:
    """An `EgtLM` from the shared model options (and the encode options, where given)."""
    names = ("pooling", "attention", "prompt_format")
    settings = {k: v for k in names if (v := getattr(args, k, None)) is not None}
    from ..model import EgtLM  # here: a command that loads no model imports no torch

    logger.info("Loading %s (mode=%s)", args.model or "the default model", mode)
    return EgtLM(args.model, mode=mode, **loading_kwargs(args), **settings, **extra)


def loading_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """`EgtLM` loading arguments from `add_loading_options` (what every command passes on)."""
    return {"torch_dtype": args.dtype, "device": args.device, "weights": args.weights}
