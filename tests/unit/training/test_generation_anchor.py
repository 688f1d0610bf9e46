"""Keeping generation while embedding trains: the anchor loss (KL to the base where the model generates),
NQ answers for the probe, and checkpoint selection that skips steps whose generation fell."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from egtlm_core import EgtLM
from egtlm_core.training import ChatRow, RAGRow, TrainConfig, train
from egtlm_core.training.config import SourceSpec
from egtlm_core.training.data import nq_answers, read_nq_rag
from egtlm_core.training.passes import rag_sample
from egtlm_core.training.probe import GenerationProbe
from egtlm_core.training.run import Selection, _wrap
from egtlm_core.training.trainer import UnifiedTrainer

pytest.importorskip("peft")

RAG = RAGRow(
    "What is the capital of France?",
    ("The quick brown fox jumps over the lazy dog.", "Paris is the capital of France."),
    "Paris",
)
CHAT = ChatRow(({"role": "user", "content": "capital of France?"}, {"role": "assistant", "content": "Paris"}))


def _unified(tmp_path: Path, model_dir: Path) -> UnifiedTrainer:
    torch.manual_seed(0)
    lm = EgtLM(str(model_dir), torch_dtype="float32", share_weights=False)  # LoRA goes into it
    plan = TrainConfig(
        output_dir=str(tmp_path / "out"), model=str(model_dir), sources=[{"name": "x"}], lora_r=8
    )
    model = _wrap(lm, plan)
    for name, p in model.named_parameters():
        if "lora_B" in name:
            p.data.normal_(std=0.05)  # an adapter that has drifted (B starts at zero)
    return UnifiedTrainer(lm, model, plan)


def _reference_kl(model: Any, ids: list[int], start: int) -> float:
    """Mean over positions start..n-2 of KL(base ‖ adapted), both full causal passes, written out here."""
    x = torch.tensor([ids])
    with torch.no_grad():
        adapted = model(input_ids=x).logits[0, start:-1].float()
        with model.disable_adapter():
            base = model(input_ids=x).logits[0, start:-1].float()
    p = F.log_softmax(base, -1)
    q = F.log_softmax(adapted, -1)
    return float((p.exp() * (p - q)).sum(-1).mean())


def test_anchor_is_kl_to_the_base_after_the_documents(tmp_path: Path, tiny_llama_dir: Path) -> None:
    unified = _unified(tmp_path, tiny_llama_dir)
    unified.model.eval()
    with torch.no_grad():
        got = float(unified.loss({"loss": "anchor", "rows": [RAG]}))
    tok = unified.lm.tokenizer
    ids = rag_sample(unified.lm, RAG)[0]
    # The last document's last token, found in the ids independently of the block groups.
    doc = tok(RAG.documents[-1], add_special_tokens=False)["input_ids"]
    end = next(i + len(doc) for i in range(len(ids), -1, -1) if ids[i : i + len(doc)] == doc)
    assert 0 < end < len(ids) - 3
    assert got > 0
    assert got == pytest.approx(_reference_kl(unified.model, ids, end), rel=1e-4)
    assert got != pytest.approx(_reference_kl(unified.model, ids, 0), rel=1e-3)  # documents left out


def test_chat_anchor_covers_the_positions_that_predict_the_answer(
    tmp_path: Path, tiny_llama_dir: Path
) -> None:
    unified = _unified(tmp_path, tiny_llama_dir)
    unified.model.eval()
    tok = unified.lm.tokenizer
    chat_ids = list(tok.apply_chat_template(list(CHAT.messages), tokenize=True, return_dict=False))
    prompt = tok.apply_chat_template(
        list(CHAT.messages[:1]), tokenize=True, return_dict=False, add_generation_prompt=True
    )
    with torch.no_grad():
        chat = float(unified.loss({"loss": "anchor", "rows": [CHAT]}))
    # Position len(prompt) - 1 predicts the answer's first token.
    assert chat == pytest.approx(_reference_kl(unified.model, chat_ids, len(prompt) - 1), rel=1e-4)


def test_steps_lower_the_anchor_loss(tmp_path: Path, tiny_llama_dir: Path) -> None:
    unified = _unified(tmp_path, tiny_llama_dir)
    batch = {"loss": "anchor", "rows": [RAG, CHAT]}
    params = [p for p in unified.model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-3)
    with torch.no_grad():
        before = float(unified.loss(batch))
    for _ in range(8):
        optimizer.zero_grad()
        unified.loss(batch).backward()
        optimizer.step()
    with torch.no_grad():
        assert float(unified.loss(batch)) < 0.5 * before
    assert set(unified.drain()) == {"loss/anchor"}  # logged under its loss when no source is named


def test_a_set_feeding_two_losses_logs_each(tmp_path: Path, tiny_llama_dir: Path) -> None:
    unified = _unified(tmp_path, tiny_llama_dir)
    unified.plan = TrainConfig(
        output_dir=str(tmp_path),
        sources=[
            {"name": "nq_rag", "loss": "distill"},
            {"name": "nq_rag", "loss": "anchor"},
            {"name": "snli"},
        ],
    )
    with torch.no_grad():
        unified.loss({"loss": "anchor", "rows": [RAG], "source": 1})
        unified.loss({"loss": "distill", "rows": [RAG], "source": 0})
    assert set(unified.drain()) == {"loss/nq_rag_anchor", "loss/nq_rag_distill"}


def _nq_root(tmp_path: Path) -> Path:
    """NQ (QED) files in their two real shapes: `answer_text` (train), `original_nq_answers` (dev)."""
    train, dev = tmp_path / "train" / "nq-qed-train", tmp_path / "train" / "nq-qed-dev"
    train.mkdir(parents=True)
    dev.mkdir(parents=True)
    rows = [
        {
            "question_text": "capital of france",
            "paragraph_text": "Paris is the capital.",
            "answer_text": ["Paris"],
        },
        {"question_text": "no answer here", "paragraph_text": "Text.", "answer_text": []},
    ]
    (train / "nq-train-00-qed.jsonlines").write_text(
        "".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8"
    )
    spans = [[{"string": "the city of Paris"}], [{"string": "Paris"}], [{"string": "Paris"}]]
    dev_rows = [
        {
            "question_text": "capital of france",
            "paragraph_text": "Paris is the capital.",
            "original_nq_answers": spans,
        },
        {
            "question_text": "colour of the sky",
            "paragraph_text": "The sky is blue.",
            "original_nq_answers": [[]],
        },
        {
            "question_text": "largest planet",
            "paragraph_text": "Jupiter is the largest planet.",
            "original_nq_answers": [[{"string": "Jupiter"}]],
        },
    ]
    (dev / "nq-dev-qed.jsonlines").write_text(
        "".join(json.dumps(r) + "\n" for r in dev_rows), encoding="utf-8"
    )
    return tmp_path


def test_nq_answers_are_read_from_train_and_dev_files(tmp_path: Path) -> None:
    root = _nq_root(tmp_path)
    assert [r.answer for r in read_nq_rag(root, "train")] == ["Paris", None]
    assert [r.answer for r in read_nq_rag(root, "dev")] == ["Paris", None, "Jupiter"]
    item = {"original_nq_answers": [[{"string": "the city of Paris"}], [{"string": "Paris"}]]}
    assert nq_answers(item) == ["Paris", "the city of Paris"]  # shortest first


class _Answers:
    """Stands in for EgtLM.answer: a fixed answer per question."""

    def __init__(self, by_question: dict[str, str]):
        self.by_question = by_question

    def answer(self, question: str, documents: Any = None, **kwargs: Any) -> Any:
        assert kwargs["reuse_cache"] is False and documents  # full prefill from the gold passage
        return type("Result", (), {"text": self.by_question[question]})()


def test_probe_scores_answers_against_every_gold_span(tmp_path: Path) -> None:
    probe = GenerationProbe.nq_dev(10, root=_nq_root(tmp_path))
    assert [r.question for r in probe.rows] == ["capital of france", "largest planet"]  # answered ones only
    result = probe.run(_Answers({"capital of france": "It is the city of Paris.", "largest planet": "Mars"}))
    assert result["match"] == 50.0
    # SQuAD normalisation drops articles: "it is city of paris" vs "city of paris", p = 3/5, r = 1
    assert result["f1"] == pytest.approx(100 * (2 * (3 / 5) / (3 / 5 + 1)) / 2)
    with pytest.raises(ValueError, match="at least one question"):
        GenerationProbe.nq_dev(0, root=tmp_path)


def test_selection_skips_steps_whose_generation_fell(tmp_path: Path) -> None:
    selection = Selection.resume(tmp_path, None)
    assert selection.improves(2, 0.5, kept=True)
    assert not selection.improves(4, 0.9, kept=False)  # a better dev score, generation lost
    assert selection.improves(6, 0.6) and selection.best_step == 6
    selection.generation_base = 40.0
    selection.record({"step": 6, "stsb_dev": 0.6})
    assert Selection.resume(tmp_path, 6).generation_base == 40.0  # a resumed run keeps the base's score


def test_train_selects_only_checkpoints_that_keep_generation(
    tmp_path: Path, selection_run_plan: Any, data_root: Path, monkeypatch: pytest.MonkeyPatch, caplog
) -> None:
    f1s = iter([50.0, 30.0, 48.0, 20.0])  # base, step 2 (fell), step 4 (kept), step 6 (fell)
    monkeypatch.setattr(
        GenerationProbe, "nq_dev", classmethod(lambda cls, size, seed=0, root=None: cls((), ()))
    )
    monkeypatch.setattr(
        GenerationProbe,
        "run",
        lambda self, lm: {"f1": next(f1s), "match": 0.0, "answers": [], "seconds": 0.0},
    )
    plan = selection_run_plan(max_steps=6, generation_probe=3, generation_floor=0.9)
    result = train(plan)
    evals = [h for h in result.history if "stsb_dev" in h]
    assert [h["generation_f1"] for h in evals] == [30.0, 48.0, 20.0]
    assert result.best_step == 4  # the only step at >= 90 % of the base's 50
    probe_log = [json.loads(line) for line in (tmp_path / "out" / "generation_probe.jsonl").open()]
    assert [p["step"] for p in probe_log] == [0, 2, 4, 6]


def test_an_anchor_source_may_mix_chats_and_rag_rows(tmp_path: Path) -> None:
    from egtlm_core.training.trainer import load_sources

    rows = [{"messages": list(CHAT.messages)}] + [
        {"question": f"q{i}?", "documents": [f"passage {i}."], "answer": "a"} for i in range(3)
    ]
    path = tmp_path / "anchor.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    plan = TrainConfig(output_dir=str(tmp_path / "out"), sources=[{"name": str(path), "loss": "anchor"}])
    ((_, loaded),) = load_sources(plan)
    assert loaded[0] == CHAT  # chats pass through; RAG rows get distractors around their gold passage
    assert len(loaded) == 4 and all(isinstance(r, RAGRow) for r in loaded[1:])
    assert any(len(r.documents) > 1 for r in loaded[1:])


def test_a_sources_scale_multiplies_its_loss_and_the_log_keeps_it_unscaled(
    tmp_path: Path, tiny_llama_dir: Path
) -> None:
    unified = _unified(tmp_path, tiny_llama_dir)
    unified.plan.sources = [SourceSpec("nq_rag", loss="anchor", scale=5.0)]
    unified.model.eval()
    with torch.no_grad():
        plain = float(unified.loss({"loss": "anchor", "rows": [RAG]}))
        unified.drain()
        scaled = float(unified.loss({"loss": "anchor", "rows": [RAG], "source": 0}))
    assert plain > 0 and scaled == pytest.approx(5 * plain, rel=1e-5)
    assert unified.drain() == {"loss/nq_rag": pytest.approx(plain, rel=1e-5)}
    with pytest.raises(ValueError, match="scale of 'nq_rag' must be > 0"):
        SourceSpec("nq_rag", loss="anchor", scale=0)
