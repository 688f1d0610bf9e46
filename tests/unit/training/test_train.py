"""Training on a tiny random model: steps lower the losses, output loads with `EgtLM(dir)`, runs resume."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from egtlm_core import EgtLM
from egtlm_core.training import ChatRow, RAGRow, ScoredPairRow, TrainConfig, Triplet, train
from egtlm_core.training.run import _wrap
from egtlm_core.training.trainer import UnifiedTrainer, save_trained

pytest.importorskip("peft")

TEXTS = ["The quick brown fox jumps.", "Paris is the capital of France.", "A cat sat on the mat."]
TRIPLETS = [
    Triplet("what is a fox?", "The quick brown fox jumps over the lazy dog.", ("A cat sat on the mat.",)),
    Triplet("capital of France", "Paris is the capital of France.", ("The dog slept by the fire.",)),
    Triplet(
        ("Retrieve passages", "where did the cat sit?"), "A cat sat on the mat.", ("Numbers like 12345.",)
    ),
]
SCORED = [
    ScoredPairRow("A cat sat on the mat.", "A cat is on the mat.", 4.5),
    ScoredPairRow("Paris is in France.", "The dog slept.", 0.5),
    ScoredPairRow("The quick brown fox.", "A brown fox jumps.", 3.0),
]
CHATS = [
    ChatRow(({"role": "user", "content": "capital of France?"}, {"role": "assistant", "content": "Paris"}))
]
RAG = [
    RAGRow(
        "What is the capital of France?",
        ("The quick brown fox jumps over the lazy dog.", "Paris is the capital of France.", "A cat sat."),
        "Paris",
    )
]


def _plan(tmp_path: Path, model: Path, **kw: Any) -> TrainConfig:
    settings: dict[str, Any] = dict(
        output_dir=str(tmp_path / "out"),
        model=str(model),
        sources=[{"name": "inline"}],
        lora_r=4,
        lora_alpha=8,
        eval_pairs=10,
        warmup_steps=0,
        logging_steps=1,
    )
    return TrainConfig(**{**settings, **kw})


def _batches() -> list[dict[str, Any]]:
    return [
        {"loss": "contrastive", "rows": TRIPLETS},
        {"loss": "margin", "rows": TRIPLETS},
        {"loss": "cosent", "rows": SCORED},
        {"loss": "generative", "rows": CHATS},
        {"loss": "distill", "rows": RAG},
    ]


def _steps(
    unified: UnifiedTrainer, batches: list[dict[str, Any]], weights: list[float], n: int, lr: float
) -> None:
    params = [p for p in unified.model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr)
    unified.model.train()
    for _ in range(n):
        optimizer.zero_grad()
        mixed = sum(w * unified.loss(b) for w, b in zip(weights, batches, strict=True))
        mixed.backward()  # type: ignore[union-attr]
        optimizer.step()


def _mixed(unified: UnifiedTrainer, batches: list[dict[str, Any]], weights: list[float]) -> float:
    with torch.no_grad():
        return sum(w * unified.loss(b).item() for w, b in zip(weights, batches, strict=True))


def _unified(tmp_path: Path, model_dir: Path) -> UnifiedTrainer:
    torch.manual_seed(0)
    lm = EgtLM(str(model_dir), torch_dtype="float32", share_weights=False)  # LoRA goes into it
    plan = _plan(tmp_path, model_dir, lora_r=8, lora_alpha=16)
    return UnifiedTrainer(lm, _wrap(lm, plan), plan)


def test_steps_lower_the_mixed_loss(tmp_path: Path, tiny_llama_dir: Path) -> None:
    unified = _unified(tmp_path, tiny_llama_dir)
    weights = [1.0, 0.5, 1.0, 0.5, 2.0]  # L = Σ λ_i L_i over all five losses
    before = _mixed(unified, _batches(), weights)
    _steps(unified, _batches(), weights, 6, lr=5e-3)
    assert _mixed(unified, _batches(), weights) < 0.9 * before


def test_steps_lower_the_distillation_loss(tmp_path: Path, tiny_llama_dir: Path) -> None:
    unified = _unified(tmp_path, tiny_llama_dir)
    batch = [{"loss": "distill", "rows": RAG}]
    before = _mixed(unified, batch, [1.0])
    assert before > 0  # block attention changes the answer's logits before training
    # the student starts next to its teacher: a small step size, or Adam overshoots (Block-Attention: 2e-6)
    _steps(unified, batch, [1.0], 8, lr=1e-4)
    assert _mixed(unified, batch, [1.0]) < 0.5 * before


def test_saved_adapter_embeds_as_the_model_in_training(tmp_path: Path, tiny_llama_dir: Path) -> None:
    torch.manual_seed(0)
    lm = EgtLM(str(tiny_llama_dir), torch_dtype="float32", pooling_method="mean", share_weights=False)
    plan = _plan(tmp_path, tiny_llama_dir, model_settings={"pooling_method": "mean"})
    model = _wrap(lm, plan)
    for name, p in model.named_parameters():
        if "lora_B" in name:
            p.data.normal_(std=0.2)  # a trained-looking adapter (B starts at zero)
    model.eval()
    in_training = lm.encode(TEXTS)
    base = EgtLM(str(tiny_llama_dir), torch_dtype="float32", pooling_method="mean")  # shared, untouched
    assert not np.allclose(in_training, base.encode(TEXTS))
    save_trained(lm, model, plan, tmp_path / "saved")
    loaded = EgtLM(str(tmp_path / "saved"), torch_dtype="float32")
    assert loaded.config.pooling == "mean"  # the settings it was trained with come along
    np.testing.assert_allclose(loaded.encode(TEXTS), in_training, atol=1e-5)


def test_init_adapter_continues_a_saved_adapter(tmp_path: Path, tiny_llama_dir: Path) -> None:
    """`init_adapter`: training starts from the adapter's weights (its vectors before any step) and
    trains them; a folder without an adapter fails before a model is loaded."""
    torch.manual_seed(0)
    first = EgtLM(str(tiny_llama_dir), torch_dtype="float32", share_weights=False)
    plan = _plan(tmp_path, tiny_llama_dir)
    model = _wrap(first, plan)
    for name, p in model.named_parameters():
        if "lora_B" in name:
            p.data.normal_(std=0.2)
    model.eval()
    saved_vectors = first.encode(TEXTS)
    save_trained(first, model, plan, tmp_path / "saved")
    again = EgtLM(str(tiny_llama_dir), torch_dtype="float32", share_weights=False)
    continued = _wrap(again, _plan(tmp_path, tiny_llama_dir, init_adapter=str(tmp_path / "saved")))
    continued.eval()
    np.testing.assert_allclose(again.encode(TEXTS), saved_vectors, atol=1e-5)
    assert any(p.requires_grad for n, p in continued.named_parameters() if "lora_" in n)
    assert not any(p.requires_grad for n, p in continued.named_parameters() if "lora_" not in n)
    with pytest.raises(FileNotFoundError, match="no adapter_config.json"):
        train(_plan(tmp_path, tiny_llama_dir, init_adapter=str(tmp_path)))
    with pytest.raises(ValueError, match="set lora: true"):
        _plan(tmp_path, tiny_llama_dir, init_adapter="shipped", lora=False)
    config = tmp_path / "cfg" / "run.yaml"
    config.parent.mkdir()
    for value, read in (("shipped", "shipped"), ("../saved", str(tmp_path / "saved"))):
        config.write_text(f"output_dir: out\ninit_adapter: {value}\nsources: [{{name: snli}}]\n", "utf-8")
        assert TrainConfig.from_yaml(config).init_adapter == read  # a path is read from the file's folder


def test_train_writes_a_loadable_model_and_resumes(
    tmp_path: Path, tiny_llama_dir: Path, data_root: Path
) -> None:
    rows = tmp_path / "rows.jsonl"
    items = [{"query": t.query, "pos": [t.pos], "neg": list(t.negs)} for t in TRIPLETS]
    items += [{"text1": s.text1, "text2": s.text2, "score": s.score} for s in SCORED]
    rows.write_text("\n".join(json.dumps(r) for r in items), encoding="utf-8")
    sources = [{"name": str(rows), "loss": "contrastive"}]
    plan = _plan(tmp_path, tiny_llama_dir, sources=sources, max_steps=4, eval_steps=2, batch_size=3)
    with pytest.raises(ValueError, match="needs Triplet rows"):  # scored pairs cannot feed InfoNCE
        train(plan)
    rows.write_text("\n".join(json.dumps(r) for r in items[:3]), encoding="utf-8")
    held = EgtLM(str(tiny_llama_dir), torch_dtype="float32")  # another user of the same weights
    before = held.encode(TEXTS)
    result = train(plan)
    # training ran on a private copy: the held model got no LoRA layers and embeds as before
    assert not any("lora" in name for name, _ in held.model.named_modules())
    np.testing.assert_array_equal(held.encode(TEXTS), before)
    out = Path(result.output_dir)
    assert (out / "adapter_model.safetensors").is_file() and (out / "egtlm_config.json").is_file()
    evals = [h["step"] for h in result.history if "stsb_dev" in h]
    assert [s for s in evals if s] == [2, 4] and result.best_step in evals  # every eval_steps, and the end
    assert json.loads((out / "training_log.json").read_text()) == result.history
    assert all("loss/rows" in h for h in result.history if "loss" in h)  # per source (rows.jsonl)
    EgtLM(str(out), torch_dtype="float32").encode(TEXTS)  # loads as it is, no conversion
    assert (out / "checkpoints" / "checkpoint-4").is_dir()
    again = train(_plan(tmp_path, tiny_llama_dir, sources=sources, max_steps=6, eval_steps=2, batch_size=3))
    assert (out / "checkpoints" / "checkpoint-6").is_dir()
    assert [h["step"] for h in again.history if "loss" in h] == [1, 2, 3, 4, 5, 6]  # resumed after step 4
    assert again.best_stsb_dev >= result.best_stsb_dev  # the first run's best survives the resume


def test_full_fine_tuning_never_changes_a_model_other_code_holds(
    tmp_path: Path, tiny_llama_dir: Path, data_root: Path
) -> None:
    """`data_root`: the run's STS-B dev checks read synthetic data, not the shared folder."""
    rows = tmp_path / "rows.jsonl"
    rows.write_text("\n".join(json.dumps({"query": t.query, "pos": [t.pos]}) for t in TRIPLETS), "utf-8")
    held = EgtLM(str(tiny_llama_dir), torch_dtype="float32")
    before = held.encode(TEXTS)
    sources = [{"name": str(rows), "loss": "contrastive"}]
    plan = _plan(tmp_path, tiny_llama_dir, sources=sources, lora=False, max_steps=2, batch_size=3)
    trained = EgtLM(train(plan).output_dir, torch_dtype="float32").encode(TEXTS)
    assert not np.allclose(trained, before)  # the steps changed the weights they trained ...
    np.testing.assert_array_equal(held.encode(TEXTS), before)  # ... a private copy, not these


def test_selection_resumes_from_the_checkpoint_step(tmp_path: Path) -> None:
    from egtlm_core.training.run import Selection, last_checkpoint

    first = Selection.resume(tmp_path, None)
    for step, score in ((2, 0.5), (4, 0.7), (6, 0.6)):
        first.record({"step": step, "loss": 1.0 / step})
        first.record({"step": step, "stsb_dev": score})
        first.improves(step, score)
    assert (first.best_step, first.best_stsb_dev) == (4, 0.7)
    for name in ("checkpoint-2", "checkpoint-4", "checkpoint-x"):
        (tmp_path / "checkpoints" / name).mkdir(parents=True)
    assert last_checkpoint(tmp_path / "checkpoints") == 4
    again = Selection.resume(tmp_path, 4)  # steps after the checkpoint are trained again
    assert [h["step"] for h in again.history] == [2, 2, 4, 4]
    assert (again.best_step, again.best_stsb_dev) == (4, 0.7)
    assert not again.improves(6, 0.65) and again.improves(6, 0.8)
    assert Selection.resume(tmp_path, None).history == []  # a fresh run starts over


def test_model_null_trains_the_untrained_default(
    tmp_path: Path, tiny_llama_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not `EgtLM()`'s default, which applies a shipped adapter: a new adapter saved with base
    'egtlm:default' must have been trained on the untrained weights it will be merged into."""
    from egtlm_core.loading import default_model
    from egtlm_core.training.run import _base

    monkeypatch.setattr(default_model, "ensure_default_model", lambda cache_dir=None: tiny_llama_dir)
    plan = _plan(tmp_path, tiny_llama_dir)
    assert _base(plan) == str(tiny_llama_dir)
    plan.model = None
    assert _base(plan) == str(tiny_llama_dir)


def test_distractors_keep_samples_within_the_character_budget(caplog) -> None:
    from egtlm_core.training import RAGRow
    from egtlm_core.training.trainer import with_distractors

    rows = [RAGRow(f"q{i}?", ("x" * (100 * (i + 1)),), "a") for i in range(6)] + [
        RAGRow("long?", ("y" * 5000,), "a")
    ]
    with caplog.at_level("WARNING"):
        out = with_distractors(rows, 3, seed=0, max_chars=700)
    assert "1 of 7 RAG rows" in caplog.text  # said, not silently skipped
    assert len(out) == 6 and all(sum(map(len, r.documents)) <= 700 for r in out)
    for row, original in zip(out, rows, strict=False):
        assert original.documents[0] in row.documents and len(set(row.documents)) == len(row.documents)
    assert any(len(r.documents) > 1 for r in out)


def test_distractors_keep_samples_within_the_token_budget(caplog) -> None:
    """Characters are not tokens: a `fits` check (the sample's token count) bounds each sample too."""
    from egtlm_core.training.trainer import with_distractors

    rows = [RAGRow(f"q{i}?", (f"doc {i} " * 20,), "a") for i in range(6)] + [
        RAGRow("dense?", ("z" * 50,), "a")
    ]

    def fits(row: RAGRow) -> bool:  # stands in for a token count: "z" counts 10 a character
        return sum(len(d) * (10 if d.startswith("z") else 1) for d in row.documents) <= 300

    with caplog.at_level("WARNING"):
        out = with_distractors(rows, 3, seed=0, fits=fits)
    assert "1 of 7 RAG rows" in caplog.text and len(out) == 6
    assert all(fits(r) for r in out) and any(len(r.documents) > 1 for r in out)
