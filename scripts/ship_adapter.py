"""Copy a trained run's adapter into the package (egtlm_core/adapters/) and plot its training curve.

    python scripts/ship_adapter.py runs/default_grit [--name smollm2-grit]

Only the adapter files travel (~10 MB: LoRA factors stored in float16): adapter_config.json
(base "egtlm:default"), adapter_model.safetensors, egtlm_config.json, training_log.json. The
curve (loss; STS-B dev and the generation probe against the base's probe score) goes to
docs/benchmarks/training_curve.png.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FILES = (
    "adapter_config.json",
    "adapter_model.safetensors",
    "egtlm_config.json",
    "training_log.json",
    "train_config.json",
)


def plot(
    history: list[dict], out: Path, generation_base: float | None = None, chat_floor: float | None = None
) -> None:
    """Mixed loss on top; STS-B dev and (when the run had one) the RAG generation probe in the middle;
    the chat probe's agreement with the base model's plain answers (and the selection floor) below."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    loss = [(h["step"], h["loss"]) for h in history if "loss" in h]
    dev = [(h["step"], h["stsb_dev"]) for h in history if "stsb_dev" in h]
    probe = [(h["step"], h["generation_f1"]) for h in history if "generation_f1" in h]
    chat = [(h["step"], h["chat_agreement"]) for h in history if "chat_agreement" in h]
    rows = 3 if chat else 2
    fig, axes = plt.subplots(rows, 1, figsize=(7, 2.8 * rows), sharex=True)
    top, middle = axes[0], axes[1]
    top.plot(*zip(*loss, strict=True), color="tab:blue")
    top.set_ylabel("training loss (mixed)")
    middle.plot(*zip(*dev, strict=True), "o-", color="tab:red")
    middle.set_ylabel("STS-B dev Spearman", color="tab:red")
    if probe:
        right = middle.twinx()
        right.plot(*zip(*probe, strict=True), "s--", color="tab:green")
        if generation_base is not None:
            right.axhline(generation_base, color="tab:green", linestyle=":", linewidth=1)
            right.annotate("base", (probe[0][0], generation_base), color="tab:green", fontsize=8)
        right.set_ylabel("RAG probe token F1 (NQ dev)", color="tab:green")
    if chat:
        bottom = axes[2]
        bottom.plot(*zip(*chat, strict=True), "d-", color="tab:purple")
        if chat_floor is not None:
            bottom.axhline(100 * chat_floor, color="tab:purple", linestyle=":", linewidth=1)
            bottom.annotate("selection floor", (chat[0][0], 100 * chat_floor), color="tab:purple", fontsize=8)
        bottom.set_ylabel("chat probe: F1 with base answers", color="tab:purple")
    axes[-1].set_xlabel("step")
    fig.suptitle("Default adapter: SmolLM2-135M-Instruct + LoRA r16, GRIT mix, CPU")
    fig.tight_layout()
    fig.savefig(out, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("run", type=Path, help="the training output_dir")
    parser.add_argument("--name", default="smollm2-grit", help="folder under egtlm_core/adapters/")
    args = parser.parse_args()
    target = ROOT / "egtlm_core" / "adapters" / args.name
    target.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        shutil.copy2(args.run / name, target / name)
    # LoRA factors in float16 halve the package's share (merging them into bf16/fp32 weights at load
    # loses nothing measurable: the merged product is rounded to the model's dtype anyway).
    from safetensors.torch import load_file, save_file

    weights = target / "adapter_model.safetensors"
    tensors = {k: v.half() for k, v in load_file(weights).items()}
    save_file(tensors, weights, metadata={"format": "pt"})
    history = json.loads((args.run / "training_log.json").read_text(encoding="utf-8"))
    selection = args.run / "selection.json"
    chosen = json.loads(selection.read_text(encoding="utf-8")) if selection.is_file() else {}
    chosen.pop("path", None)  # the run's own folder means nothing inside the package
    (target / "selection.json").write_text(json.dumps(chosen, indent=1), encoding="utf-8")
    base = chosen.get("generation_base")
    settings = json.loads((args.run / "train_config.json").read_text(encoding="utf-8"))
    plot(history, ROOT / "docs" / "benchmarks" / "training_curve.png", base, settings.get("chat_floor"))
    size = sum(p.stat().st_size for p in target.iterdir())
    print(f"shipped {target.relative_to(ROOT)} ({size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
