"""`egtlm eval MODEL --task sts|zh_sts|scifact|xquad|retrieval|rag|all`: quality on local data.

Prints one table (task, metric, value, items, seconds) to stdout and, with --json, writes every
number (RAG answers included) to a file. MODEL is a directory, adapter, .gguf or hub id, or
`default` for the packaged default model with its default settings.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from ..evaluation.datasets import data_dir
from ..evaluation.runner import ALIASES, DESCRIPTION, HEADLINE, TASKS, EvalOptions, run_eval
from ..evaluation.sts import SIDES
from .io import UsageError
from .options import _positive_int, add_loading_options, loading_kwargs

logger = logging.getLogger(__name__)

DEFAULT_NAMES = ("default",)
_COUNT_KEYS = ("pairs", "queries", "questions")


def register(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    """Add `egtlm eval` to the subcommands; MODEL is positional here, so a shared --model is left out."""
    p = sub.add_parser(
        "eval",
        parents=[q for q in parents if "--model" not in q._option_string_actions],
        help="evaluate a model on STS, retrieval and RAG sets (local data)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model", metavar="MODEL", help="model path or hub id; 'default' for the packaged model")
    choices = TASKS + tuple(ALIASES)
    p.add_argument("--task", action="append", required=True, choices=choices, help="repeatable")
    p.add_argument("--limit", type=_positive_int, default=None, metavar="N", help="seeded sample of N items")
    p.add_argument("--split", default="test", help="test (default), dev or train")
    p.add_argument(
        "--scifact-docs",
        type=_positive_int,
        default=None,
        metavar="N",
        help="SciFact corpus subset: judged documents + random others, N in all (default: all 5183)",
    )
    p.add_argument(
        "--sts-side", action="append", choices=SIDES, default=None, help="document (default), query, plain"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-new-tokens", type=_positive_int, default=48, metavar="N", help="rag answers")
    p.add_argument(
        "--data-dir", default=None, metavar="DIR", help="default: $EGTLM_DATA_DIR or ../shared/data"
    )
    p.add_argument("--json", type=Path, default=None, metavar="OUT", help="write all results here")
    p.add_argument("--threads", type=_positive_int, default=None, metavar="N", help="torch threads")
    add_loading_options(p)
    p.set_defaults(func=cmd_eval)


def format_table(results: dict[str, Any]) -> str:
    """The headline metric of each task, with its item count and wall time, as a Markdown table."""
    lines = ["| task | metric | value | items | seconds |", "|---|---|---|---|---|"]
    for task, r in results["tasks"].items():
        count = next((r[k] for k in _COUNT_KEYS if k in r), "")
        value = r[HEADLINE[task]]
        shown = f"{value:.1f}" if task == "rag" else f"{value:.3f}"
        lines.append(f"| {task} | {DESCRIPTION[task]} | {shown} | {count} | {r['wall_s']:.0f} |")
        if len(results["options"]["sts_sides"]) > 1:  # every side's Spearman under the headline
            for side in (k for k in r if k.startswith("spearman_")):
                lines.append(f"| {task} | {side} | {r[side]:.3f} | {count} | |")
    return "\n".join(lines)


def cmd_eval(args: argparse.Namespace) -> int:
    import torch

    from ..model import EgtLM

    if args.json is not None and not args.json.parent.is_dir():
        raise UsageError(f"The folder of --json {args.json} does not exist.")
    data_dir(args.data_dir)  # a missing data folder fails before the model loads
    if args.threads:
        torch.set_num_threads(args.threads)
    options = EvalOptions(
        limit=args.limit,
        split=args.split,
        scifact_documents=args.scifact_docs,
        sts_sides=tuple(args.sts_side or ("document",)),
        seed=args.seed,
        max_new_tokens=args.max_new_tokens,
        data_dir=args.data_dir,
    )
    name = None if args.model in DEFAULT_NAMES else args.model
    start = time.perf_counter()
    model = EgtLM(name, **loading_kwargs(args))
    load_s = time.perf_counter() - start
    results = run_eval(
        model, args.task, options, on_result=lambda t, r: logger.info("%s done: %s", t, r.get("wall_s"))
    )
    results.update(
        load_s=load_s,
        dtype=str(model.dtype).removeprefix("torch."),
        weights=model.weights,
        threads=torch.get_num_threads(),
        command=" ".join(["egtlm", *map(shlex.quote, sys.argv[1:])]),
    )
    print(format_table(results))
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        print(f"Wrote {args.json}")
    return 0
