"""`egtlm train CONFIG.yaml`: run one training config (see `egtlm_core.training.TrainConfig`).

Checkpoints go to OUTPUT_DIR/checkpoints, so running the same command again resumes; the STS-B dev
best step ends up in OUTPUT_DIR, which `EgtLM(OUTPUT_DIR)` loads as it is. Prints the best step and
its dev score; the whole history is in OUTPUT_DIR/training_log.json.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from .io import UsageError

logger = logging.getLogger(__name__)


def register(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    """Add `egtlm train`; the model comes from the config file, so the shared model options are left out."""
    p = sub.add_parser(
        "train",
        parents=[q for q in parents if "--model" not in q._option_string_actions],
        help="train a model from a YAML config (LoRA or full, GRIT losses)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("config", type=Path, metavar="CONFIG.yaml", help="training settings")
    p.add_argument("--output-dir", default=None, metavar="DIR", help="overrides the config's output_dir")
    p.add_argument("--max-steps", type=int, default=None, metavar="N", help="overrides max_steps")
    p.add_argument(
        "--device", default=None, help="auto (cuda when present), cpu, cuda, cuda:N; overrides device"
    )
    p.add_argument(
        "--teachers-only",
        action="store_true",
        help="only compute (or complete) the teachers' vectors of the training texts, then stop",
    )
    p.set_defaults(func=cmd_train)


def cmd_train(args: argparse.Namespace) -> int:
    try:
        from ..training import TrainConfig, teacher_step, train
    except ImportError as e:  # pragma: no cover - peft/yaml missing
        raise UsageError(f"egtlm train needs the training extra: pip install 'egtlm[train]' ({e})") from e

    if not args.config.is_file():
        raise UsageError(f"The config file {args.config} does not exist.")
    plan = TrainConfig.from_yaml(args.config)
    if args.output_dir is not None:
        plan.output_dir = str(Path(args.output_dir).resolve())
    if args.device is not None:
        plan.device = args.device
    if args.max_steps is not None:
        plan.max_steps = args.max_steps
        plan.__post_init__()
    if args.teachers_only:
        if not plan.teachers:  # a recipe without distillation: the step has nothing to do
            print(f"{args.config} names no `teachers`: no teacher vectors to compute.")
            return 0
        vectors = teacher_step(plan)
        print(f"Teacher vectors of {len(vectors.rows) if vectors else 0} texts in {plan.teacher_cache}")
        return 0
    result = train(plan)
    print(f"best step {result.best_step}: STS-B dev Spearman {result.best_stsb_dev:.4f}")
    print(f"Wrote {result.output_dir}")
    return 0
