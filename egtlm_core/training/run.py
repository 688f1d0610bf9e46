"""`train(config)`: the Hugging Face `Trainer` over `UnifiedTrainer`'s losses, with dev-set selection.

The `Trainer` brings the optimiser, warm-up and cosine schedule, bf16 autocast, gradient
checkpointing, logging and resumable checkpoints (`output_dir/checkpoints`, picked up again by a
second run of the same config). STS-B dev Spearman is measured every `eval_steps`; the best step's
adapter is what ends up in `output_dir`.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from pathlib import Path
from typing import Any

import torch

from ..evaluation import read_stsb, subsample
from ..loading.devices import cpu_auto_dtype_and_reason
from ..model import EgtLM
from .config import TrainConfig
from .trainer import (
    MixedBatches,
    TrainResult,
    UnifiedTrainer,
    load_sources,
    run_config,
    save_trained,
    sts_dev,
)

logger = logging.getLogger(__name__)


def _wrap(lm: EgtLM, plan: TrainConfig) -> Any:
    """The trainable model: the EgtLM's causal LM with LoRA injected in place (or all weights)."""
    model = lm.model
    if not plan.lora:
        model.requires_grad_(True)
        return model
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError as e:
        raise ImportError("LoRA training needs peft: pip install 'egtlm[train]'") from e
    config = LoraConfig(
        r=plan.lora_r,
        lora_alpha=plan.lora_alpha,
        lora_dropout=plan.lora_dropout,
        target_modules=list(plan.lora_targets),
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


def _base(plan: TrainConfig) -> str | None:
    """The weights training starts from. `model: null` is the *untrained* packaged model (its converted
    directory), never `EgtLM()`'s default, which applies a shipped adapter once there is one: the new
    adapter is saved with base `egtlm:default` (the untrained model) and must be trained on that."""
    if plan.model is not None:
        return plan.model
    from ..loading.default_model import ensure_default_model

    return str(ensure_default_model())


def _bf16(plan: TrainConfig) -> bool:
    if plan.bf16 is not None:
        return plan.bf16
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    return cpu_auto_dtype_and_reason()[0] == torch.bfloat16


def _trainer_classes() -> tuple[Any, Any, Any]:
    try:
        from transformers import Trainer, TrainerCallback, TrainingArguments
    except ImportError as e:  # pragma: no cover - transformers is a core dependency
        raise ImportError("Training needs the Trainer and accelerate: pip install 'egtlm[train]'") from e
    return Trainer, TrainerCallback, TrainingArguments


def train(plan: TrainConfig) -> TrainResult:
    """Run one training config; returns where the model is and how it scored on STS-B dev."""
    Trainer, TrainerCallback, TrainingArguments = _trainer_classes()
    if plan.threads:
        torch.set_num_threads(plan.threads)
    torch.manual_seed(plan.seed)
    out = Path(plan.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "train_config.json").write_text(json.dumps(run_config(plan), indent=2), encoding="utf-8")
    lm = EgtLM(_base(plan), torch_dtype="float32", **plan.model_settings)
    model = _wrap(lm, plan)
    unified = UnifiedTrainer(lm, model, plan)
    dev = subsample(read_stsb("dev"), plan.eval_pairs, seed=plan.seed)
    history: list[dict[str, Any]] = []
    best = {"step": 0, "stsb_dev": -math.inf}

    def evaluate(step: int) -> None:
        model.eval()
        score = sts_dev(lm, dev)
        model.train()
        history.append({"step": step, "stsb_dev": score})
        logger.info("step %d: STS-B dev Spearman %.4f", step, score)
        if score > best["stsb_dev"]:
            best.update(step=step, stsb_dev=score)
            save_trained(lm, model, plan, out / "best")

    class DevSelection(TrainerCallback):  # type: ignore[misc, valid-type]
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.global_step % plan.eval_steps == 0 or state.global_step == state.max_steps:
                evaluate(state.global_step)

        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
            if logs and "loss" in logs:
                history.append({"step": state.global_step, "loss": float(logs["loss"])})

    class _Trainer(Trainer):  # type: ignore[misc, valid-type]
        def compute_loss(self, model: Any, inputs: Any, return_outputs: bool = False, **kwargs: Any) -> Any:
            loss = unified.loss(inputs)
            return (loss, None) if return_outputs else loss

    args = TrainingArguments(
        output_dir=str(out / "checkpoints"),
        max_steps=plan.max_steps,
        per_device_train_batch_size=1,  # one item = one prepared one-source batch
        learning_rate=plan.learning_rate,
        warmup_steps=plan.warmup_steps,
        lr_scheduler_type="cosine",
        logging_steps=plan.logging_steps,
        save_steps=plan.eval_steps,
        save_total_limit=1,
        bf16=_bf16(plan),
        use_cpu=not torch.cuda.is_available(),
        gradient_checkpointing=plan.gradient_checkpointing,
        remove_unused_columns=False,
        dataloader_num_workers=0,
        report_to=[],
        seed=plan.seed,
        disable_tqdm=False,
    )
    sources = load_sources(plan)
    trainer = _Trainer(
        model=model,
        args=args,
        train_dataset=MixedBatches(sources, plan.batch_size, plan.seed),
        data_collator=lambda features: features[0],
        callbacks=[DevSelection()],
    )
    try:
        resume = any((out / "checkpoints").glob("checkpoint-*"))
        trainer.train(resume_from_checkpoint=True if resume else None)
        if not (out / "best").is_dir():  # no evaluation ran (max_steps < eval_steps): the last step
            save_trained(lm, model, plan, out / "best")
    finally:  # LoRA was injected into the process-wide model: take it out again
        if hasattr(model, "unload"):
            model.unload()
    for item in (out / "best").iterdir():  # the selected step becomes the output
        shutil.copy2(item, out / item.name)
    (out / "training_log.json").write_text(json.dumps(history, indent=2), encoding="utf-8")
    return TrainResult(str(out), int(best["step"]), float(best["stsb_dev"]), history)
