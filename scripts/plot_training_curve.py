"""Plot a training run's loss and STS-B dev Spearman (OUTPUT_DIR/training_log.json) into one PNG.

python scripts/plot_training_curve.py runs/default_grit docs/benchmarks/training_curve.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot(history: list[dict], out: Path, title: str) -> None:
    """Training loss (left axis, every logging step) and dev Spearman (right axis, every evaluation)."""
    losses = [(h["step"], h["loss"]) for h in history if "loss" in h]
    dev = [(h["step"], h["stsb_dev"]) for h in history if "stsb_dev" in h]
    fig, ax = plt.subplots(figsize=(7, 4))
    if losses:
        ax.plot(*zip(*losses, strict=True), color="tab:blue", lw=1, label="training loss (mixed)")
    ax.set_xlabel("step")
    ax.set_ylabel("loss", color="tab:blue")
    right = ax.twinx()
    if dev:
        right.plot(*zip(*dev, strict=True), "o-", color="tab:red", label="STS-B dev Spearman")
    right.set_ylabel("STS-B dev Spearman", color="tab:red")
    ax.set_title(title)
    fig.legend(loc="upper center", bbox_to_anchor=(0.5, 0.9), ncol=2, fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("run", type=Path, help="a training output_dir (holds training_log.json)")
    parser.add_argument("out", type=Path, help="PNG to write")
    parser.add_argument("--title", default="egtlm training: SmolLM2-135M-Instruct + LoRA (CPU)")
    args = parser.parse_args()
    log = args.run / "training_log.json"
    if not log.is_file():
        raise SystemExit(f"{log} does not exist; is {args.run} a finished training run?")
    plot(json.loads(log.read_text(encoding="utf-8")), args.out, args.title)
    print(f"Wrote {args.out}")


if __name__ == "__main__":
    main()
