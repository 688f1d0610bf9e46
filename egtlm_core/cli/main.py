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
import logging
import os
import sys
from collections.abc import Iterator

from .. import __version__
from . import chat, encode, evaluate, info, mine, rag, serve, train
from .options import (
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    _common_options,
    _model_options,
)

logger = logging.getLogger(__name__)
# each: register(subparsers, parents) + its cmd_ function
COMMANDS = (info, encode, chat, evaluate, train, mine, serve, rag)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="egtlm", description="One decoder model that embeds and generates.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress (INFO)")
    parser.add_argument("--version", action="version", version=f"egtlm {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    parents = [_common_options(), _model_options()]
    for command in COMMANDS:
        command.register(sub, parents)
    return parser


def setup_logging(verbose: bool) -> None:
    if not verbose:
        return
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("egtlm_core").setLevel(logging.INFO)


@contextlib.contextmanager
def quiet_transformers(quiet: bool) -> Iterator[None]:
    """Hide transformers' loading bars and load reports while `quiet` (restored afterwards)."""
    if not quiet:
        yield
        return
    from transformers.utils import logging as hf_logging

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
        # --verbose shows them; a client of a running server (`--server`) loads no model and so
        # imports no transformers
        with quiet_transformers(not args.verbose and not getattr(args, "server", None)):
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
