"""`TrainConfig`: one training run as data (a YAML file for `egtlm train`), validated where it enters."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

SHIPPED_ADAPTER = "shipped"  # `init_adapter` value naming the adapter packaged with egtlm
LOSSES = ("contrastive", "cosent", "margin", "generative", "distill", "anchor")


@dataclass
class SourceSpec:
    """One training set: a shared set's name (see `data.READERS`) or a .jsonl path, its loss, its share."""

    name: str
    loss: str = "contrastive"
    weight: float = 1.0  # share of batches drawn from this source
    limit: int | None = None  # at most this many rows (a seeded sample)
    batch_size: int | None = None  # rows per batch of this source (default: the run's batch_size)
    scale: float = 1.0  # multiplier of this source's loss (`weight` sets how often it is drawn)

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ValueError(f"Unknown loss {self.loss!r} for {self.name!r}; expected one of {LOSSES}.")
        for name in ("weight", "scale"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} of {self.name!r} must be > 0, got {getattr(self, name)!r}.")


@dataclass
class TrainConfig:
    """Settings of one run; every field has a default that suits SmolLM2-135M on a CPU.

    The model's embedding settings (pooling, attention, instructions) are `model_settings` and are
    saved with the output, so `EgtLM(output_dir)` embeds exactly as training did.
    """

    output_dir: str
    model: str | None = None  # None: the packaged default model
    sources: list[SourceSpec] = field(default_factory=list)
    model_settings: dict[str, Any] = field(default_factory=dict)  # EgtLMConfig fields
    lora: bool = True  # False: full fine-tuning
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    init_adapter: str | None = None  # a LoRA adapter to continue from (SHIPPED_ADAPTER: the packaged one)
    lora_targets: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )
    learning_rate: float = 2e-4
    max_steps: int = 300
    warmup_steps: int = 20
    batch_size: int = 32  # rows per step (GritLM-style: one source per batch)
    temperature: float = 0.05  # InfoNCE
    margin: float = 0.5  # EGTLM margin loss alpha
    cosent_scale: float = 20.0
    distill_temperature: float = 1.0
    teachers: list[str] = field(default_factory=list)  # embedders distilled into every embedding batch
    teacher_dir: str | None = None  # their vectors, computed once (None: `teachers/` beside output_dir)
    teacher_weight: float = 1.0  # multiplier of the teacher losses added to each embedding batch's loss
    teacher_mse_weight: float = 10.0  # similarity MSE beside the ranking KL inside the teacher loss
    teacher_temperature: float = 0.05  # softmax temperature of the ranking KL (student and teacher)
    rag_documents: int = 3  # documents per distillation sample (the gold one among distractors)
    max_length: int = 256  # tokens per embedded text
    eval_steps: int = 50
    eval_pairs: int = 500  # STS-B dev pairs scored at each evaluation (checkpoint selection)
    generation_probe: int = 0  # NQ dev questions answered at each evaluation (0: no probe)
    generation_floor: float = 0.9  # a selected checkpoint keeps this share of the base's probe F1
    chat_probe: int = 0  # NQ dev questions asked without a passage at each evaluation (0: none)
    chat_floor: float = 0.5  # a selected checkpoint's plain answers keep this token F1 with the base's
    seed: int = 0
    bf16: bool | None = None  # None: where the CPU/GPU has it
    gradient_checkpointing: bool = False
    threads: int | None = None  # torch threads for the run (None: torch's default)
    device: str = "auto"  # "auto" (cuda when present), "cpu", "cuda", "cuda:N": student and teachers
    logging_steps: int = 10

    def __post_init__(self) -> None:
        self.sources = [s if isinstance(s, SourceSpec) else SourceSpec(**s) for s in self.sources]
        if not self.sources:
            raise ValueError("A training config needs at least one entry under `sources`.")
        for name in ("max_steps", "batch_size", "lora_r", "eval_steps", "max_length"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}.")
        for name in ("generation_probe", "chat_probe"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{name} must be a count of questions >= 0, got {value!r}.")
        for name in ("generation_floor", "chat_floor"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)!r}.")
        for name in ("temperature", "teacher_temperature"):
            if not 0 < getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in (0, 1], got {getattr(self, name)!r}.")
        for name in ("teacher_weight", "teacher_mse_weight"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}.")
        if isinstance(self.teachers, str):
            self.teachers = [self.teachers]
        if self.init_adapter is not None and not self.lora:
            raise ValueError("init_adapter continues a LoRA adapter; set lora: true (or drop init_adapter).")

    @property
    def teacher_cache(self) -> Path:
        """Where teacher vectors (and unpacked teacher models) are kept between runs."""
        return Path(self.teacher_dir) if self.teacher_dir else Path(self.output_dir).parent / "teachers"

    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str]) -> TrainConfig:
        """Read a config; relative `output_dir` and .jsonl sources resolve against the file's folder."""
        import yaml

        path = Path(path)
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a mapping of settings, got {type(data).__name__}.")
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"{path}: unknown settings {sorted(unknown)}; see TrainConfig for the names.")
        for key in ("output_dir", "teacher_dir", "init_adapter"):
            if data.get(key) and data[key] != SHIPPED_ADAPTER and not Path(data[key]).is_absolute():
                data[key] = str((path.parent / data[key]).resolve())
        data["sources"] = [_resolved(s, path.parent) for s in data.get("sources") or []]
        return cls(**data)


def _resolved(source: Any, folder: Path) -> Any:
    """A source entry whose relative .jsonl path is read against the config file's folder."""
    if not isinstance(source, dict) or not isinstance(source.get("name"), str):
        return source
    name = Path(source["name"])
    if name.suffix in (".jsonl", ".json", ".jsonlines") and not name.is_absolute():
        return {**source, "name": str((folder / name).resolve())}
    return source
