"""The GRIT training pipeline: data rows and readers, losses, passes that share `encode`'s code, and a
`Trainer`-based run whose output `EgtLM(output_dir)` loads directly; distillation teachers' vectors
(`teacher_vectors`, computed once and cached) for training and for choosing teachers."""

from __future__ import annotations

from .config import LOSSES, SourceSpec, TrainConfig
from .data import READERS, ChatRow, RAGRow, ScoredPairRow, Triplet, load_source, parse_row, read_jsonl
from .losses import cosent, distillation_kl, info_nce, margin_loss, next_token_loss
from .run import teacher_step, train
from .teachers import TeacherVectors, teacher_vectors
from .trainer import DEFAULT_BASE, SETTINGS_FILE, TrainResult

__all__ = [
    "DEFAULT_BASE",
    "LOSSES",
    "READERS",
    "SETTINGS_FILE",
    "ChatRow",
    "RAGRow",
    "ScoredPairRow",
    "SourceSpec",
    "TeacherVectors",
    "TrainConfig",
    "TrainResult",
    "Triplet",
    "cosent",
    "distillation_kl",
    "info_nce",
    "load_source",
    "margin_loss",
    "next_token_loss",
    "parse_row",
    "read_jsonl",
    "teacher_step",
    "teacher_vectors",
    "train",
]
