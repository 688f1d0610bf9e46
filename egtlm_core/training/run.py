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
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..evaluation import read_stsb, subsample
from ..loading.devices import cpu_auto_dtype_and_reason, resolve_device
from ..loading.sources import PACKAGED_ADAPTER
from ..model import EgtLM
from .config import SHIPPED_ADAPTER, TrainConfig
from .probe import ChatProbe, GenerationProbe
from .teachers import TeacherVectors, teacher_vectors
from .trainer import (
    EMBEDDING_LOSSES,
    MixedBatches,
    TrainResult,
    UnifiedTrainer,
    load_sources,
    run_config,
    save_trained,
    sts_dev,
    teacher_texts,
)

logger = logging.getLogger(__name__)
SELECTION_FILE = "selection.json"  # best dev step and history, beside the checkpoints


@dataclass
class Selection:
    """Dev-set selection kept on disk after every record, so a resumed run keeps its best step (and
    does not overwrite `best/` with a worse one) and its whole history."""

    path: Path
    best_step: int = 0
    best_stsb_dev: float = -math.inf
    history: list[dict[str, Any]] = field(default_factory=list)
    generation_base: float | None = None  # the untrained model's probe F1 (percent)
    chat_base: list[str] | None = None  # the untrained model's answers to the chat probe

    @classmethod
    def resume(cls, out: Path, checkpoint_step: int | None) -> Selection:
        """A fresh selection, or the saved one up to the checkpoint being resumed from."""
        path = out / SELECTION_FILE
        if checkpoint_step is None or not path.is_file():
            return cls(path)
        data = json.loads(path.read_text(encoding="utf-8"))
        history = [h for h in data["history"] if h["step"] <= checkpoint_step]  # later steps are redone
        base, chat = data.get("generation_base"), data.get("chat_base")
        return cls(path, int(data["best_step"]), float(data["best_stsb_dev"]), history, base, chat)

    def record(self, entry: dict[str, Any]) -> None:
        self.history.append(entry)
        self.path.write_text(json.dumps(self.__dict__, default=str, indent=1), encoding="utf-8")

    def improves(self, step: int, score: float, kept: bool = True) -> bool:
        """A new best: a higher dev score at a step whose generation held up (`kept`)."""
        if not kept or score <= self.best_stsb_dev:
            return False
        self.best_step, self.best_stsb_dev = step, score
        return True


PROBE_FILE = "generation_probe.jsonl"  # the probe's answers at each evaluation, for reading


def _probe(probe: GenerationProbe, lm: EgtLM, model: Any, out: Path, step: int) -> dict[str, Any]:
    """Run the generation probe in eval mode; its answers are appended to `PROBE_FILE`."""
    training = model.training
    model.eval()
    try:
        result = probe.run(lm)
    finally:
        model.train(training)
    with (out / PROBE_FILE).open("a", encoding="utf-8") as f:
        f.write(json.dumps({"step": step, **{k: result[k] for k in ("f1", "match", "answers")}}) + "\n")
    logger.info(
        "step %d: generation probe F1 %.1f, match %.1f (%.0f s)",
        step,
        result["f1"],
        result["match"],
        result["seconds"],
    )
    return result


def _chat_probe(
    probe: ChatProbe, lm: EgtLM, out: Path, step: int, base: list[str] | None
) -> tuple[list[str], float]:
    """The chat probe's answers (appended to `PROBE_FILE`) and their agreement with `base`'s."""
    start = time.perf_counter()
    answers = probe.answers(lm)
    agreement = 100.0 if base is None else probe.agreement(answers, base)
    with (out / PROBE_FILE).open("a", encoding="utf-8") as f:
        f.write(json.dumps({"step": step, "chat_agreement": agreement, "chat_answers": answers}) + "\n")
    logger.info(
        "step %d: chat probe agreement with the base %.1f (%.0f s)",
        step,
        agreement,
        time.perf_counter() - start,
    )
    return answers, agreement


def last_checkpoint(folder: Path) -> int | None:
    """The step of the newest `checkpoint-N` in `folder`, or None."""
    steps = [
        int(m.group(1))
        for p in folder.glob("checkpoint-*")
        if (m := re.fullmatch(r"checkpoint-(\d+)", p.name))
    ]
    return max(steps) if steps else None


def teacher_step(plan: TrainConfig) -> TeacherVectors | None:
    """Only the teacher step of `plan` (`egtlm train --teachers-only`): no student model is loaded."""
    return prepare_teachers(plan, load_sources(plan, losses=EMBEDDING_LOSSES))


def prepare_teachers(plan: TrainConfig, sources: Any) -> TeacherVectors | None:
    """The teachers' vectors of every text the embedding losses see (the first, resumable step of a
    distillation run; stored vectors are read, missing ones computed), or None without teachers."""
    if not plan.teachers:
        return None
    texts = teacher_texts(sources)
    device = str(resolve_device(plan.device))
    members = [
        teacher_vectors(n, texts, plan.teacher_cache, plan.max_length, device=device) for n in plan.teachers
    ]
    logger.info("Teacher vectors ready: %s, %d texts", "+".join(plan.teachers), len(texts))
    return TeacherVectors.ensemble(members)


def _wrap(lm: EgtLM, plan: TrainConfig) -> Any:
    """The trainable model: the EgtLM's causal LM with LoRA injected in place (or all weights)."""
    model = lm.model
    if not plan.lora:
        model.requires_grad_(True)
        return model
    try:
        from peft import LoraConfig, PeftModel, get_peft_model
    except ImportError as e:
        raise ImportError("LoRA training needs peft: pip install 'egtlm[train]'") from e
    if plan.init_adapter is not None:  # continue its weights (a fresh optimizer and schedule)
        return PeftModel.from_pretrained(model, str(_init_adapter(plan)), is_trainable=True)
    config = LoraConfig(
        r=plan.lora_r,
        lora_alpha=plan.lora_alpha,
        lora_dropout=plan.lora_dropout,
        target_modules=list(plan.lora_targets),
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


def _init_adapter(plan: TrainConfig) -> Path:
    """The folder of the adapter a run continues from, checked before any model is loaded."""
    path = PACKAGED_ADAPTER if plan.init_adapter == SHIPPED_ADAPTER else Path(str(plan.init_adapter))
    if not (path / "adapter_config.json").is_file():
        raise FileNotFoundError(
            f"init_adapter {plan.init_adapter!r}: no adapter_config.json in {path}; name a folder "
            f"written by `egtlm train` (or {SHIPPED_ADAPTER!r} for the packaged adapter)."
        )
    return path


def _base(plan: TrainConfig) -> str | None:
    """The weights training starts from. `model: null` is the *untrained* packaged model (its converted
    directory), never `EgtLM()`'s default, which applies a shipped adapter once there is one: the new
    adapter is saved with base `egtlm:default` (the untrained model) and must be trained on that."""
    if plan.model is not None:
        return plan.model
    from ..loading.default_model import ensure_default_model

    return str(ensure_default_model())


def _bf16(plan: TrainConfig, device: torch.device) -> bool:
    if plan.bf16 is not None:
        return plan.bf16
    if device.type == "cuda":
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
    if plan.init_adapter is not None:
        _init_adapter(plan)  # a wrong path fails before minutes of loading
    out = Path(plan.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "train_config.json").write_text(json.dumps(run_config(plan), indent=2), encoding="utf-8")
    # A private copy: LoRA is injected into it in place and trained, which no other EgtLM may see
    device = resolve_device(plan.device)
    lm = EgtLM(_base(plan), torch_dtype="float32", device=device, share_weights=False, **plan.model_settings)
    checkpoint = last_checkpoint(out / "checkpoints")
    if checkpoint is None:  # a fresh run: answers of an earlier one do not belong to it
        (out / PROBE_FILE).unlink(missing_ok=True)
        shutil.rmtree(out / "self_answers", ignore_errors=True)
    sources = load_sources(plan, lm)  # before LoRA: prompts are answered by the base model
    teachers = prepare_teachers(plan, sources)
    model = _wrap(lm, plan)
    unified = UnifiedTrainer(lm, model, plan, teachers)
    dev = subsample(read_stsb("dev"), plan.eval_pairs, seed=plan.seed)
    selection = Selection.resume(out, checkpoint)

    probe = GenerationProbe.nq_dev(plan.generation_probe, plan.seed) if plan.generation_probe else None
    chat = ChatProbe.nq_dev(plan.chat_probe, plan.seed) if plan.chat_probe else None
    if probe is not None and selection.generation_base is None:
        selection.generation_base = _probe(probe, lm, model, out, step=0)["f1"]
    if chat is not None and selection.chat_base is None:
        selection.chat_base = _chat_probe(chat, lm, out, step=0, base=None)[0]

    def evaluate(step: int) -> None:
        model.eval()
        score = sts_dev(lm, dev)
        entry: dict[str, Any] = {"step": step, "stsb_dev": score}
        kept = True
        if probe is not None and selection.generation_base is not None:
            result = _probe(probe, lm, model, out, step)
            entry["generation_f1"], entry["generation_match"] = result["f1"], result["match"]
            kept = result["f1"] >= plan.generation_floor * selection.generation_base
        if chat is not None and selection.chat_base is not None:
            entry["chat_agreement"] = _chat_probe(chat, lm, out, step, selection.chat_base)[1]
            kept = kept and entry["chat_agreement"] >= 100 * plan.chat_floor
        model.train()
        entry["kept"] = kept
        selection.record(entry)
        logger.info(
            "step %d: STS-B dev Spearman %.4f%s", step, score, "" if kept else " (generation not kept)"
        )
        if selection.improves(step, score, kept):
            save_trained(lm, model, plan, out / "best")

    class DevSelection(TrainerCallback):  # type: ignore[misc, valid-type]
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.global_step % plan.eval_steps == 0 or state.global_step == state.max_steps:
                evaluate(state.global_step)

        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
            if logs and "loss" in logs:
                entry = {"step": state.global_step, "loss": float(logs["loss"])}
                selection.record({**entry, **unified.drain()})

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
        bf16=_bf16(plan, device),
        use_cpu=device.type == "cpu",
        gradient_checkpointing=plan.gradient_checkpointing,
        remove_unused_columns=False,
        dataloader_num_workers=0,
        report_to=[],
        seed=plan.seed,
        disable_tqdm=False,
    )
    trainer = _Trainer(
        model=model,
        args=args,
        train_dataset=MixedBatches(sources, plan.batch_size, plan.seed),
        data_collator=lambda features: features[0],
        callbacks=[DevSelection()],
    )
    trainer.train(resume_from_checkpoint=True if checkpoint is not None else None)
    if not (out / "best").is_dir():  # no evaluation ran, or none kept generation: the last step
        if selection.history and (probe is not None or chat is not None):
            logger.warning(
                "No checkpoint kept generation (%.0f %% of the base's probe F1, chat agreement %.0f); "
                "the output is the last step and should not be shipped.",
                100 * plan.generation_floor,
                100 * plan.chat_floor,
            )
        save_trained(lm, model, plan, out / "best")
    for item in (out / "best").iterdir():  # the selected step becomes the output
        shutil.copy2(item, out / item.name)
    history = selection.history
    (out / "training_log.json").write_text(json.dumps(history, indent=2), encoding="utf-8")
    return TrainResult(str(out), selection.best_step, selection.best_stsb_dev, history)
