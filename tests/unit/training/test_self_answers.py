"""Plain-chat anchoring: prompts answered by the base model before training, cached per run, and
the chat probe that keeps checkpoints whose plain answers stay close to the base's."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from egtlm_core import EgtLM
from egtlm_core.training import ChatRow, TrainConfig, train
from egtlm_core.training import self_answers as self_answers_module
from egtlm_core.training.data import PromptRow, read_chat_prompts, read_jsonl
from egtlm_core.training.probe import ChatProbe
from egtlm_core.training.self_answers import answer_prompts, greedy_answers
from egtlm_core.training.trainer import load_sources, self_answer_cache

pytest.importorskip("peft")

PROMPTS = [
    "What is the capital of France?",
    "Write one sentence about dogs.",
    "hi",
    "Explain, in a few words, why the sky looks blue during the day but red at sunset.",
]


def _prompt(text: str) -> PromptRow:
    return PromptRow(({"role": "user", "content": text},))


def test_a_conversation_ending_with_the_user_is_a_prompt(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    rows = [
        {"messages": [{"role": "user", "content": "hi"}]},
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    prompt, chat = read_jsonl(path)
    assert prompt == _prompt("hi")
    assert isinstance(chat, ChatRow)


def test_batched_greedy_answers_are_what_chat_answers(tiny_llama_dir: Path) -> None:
    lm = EgtLM(str(tiny_llama_dir), torch_dtype="float32")
    conversations = [[{"role": "user", "content": p}] for p in PROMPTS]
    got = greedy_answers(lm, conversations, max_new_tokens=8, batch_size=3)  # left padding in a batch
    assert got == [lm.chat(c, max_new_tokens=8).text for c in conversations]
    assert all(got)


def test_answers_are_cached_and_an_unreadable_one_is_made_again(
    tmp_path: Path, tiny_llama_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    lm = EgtLM(str(tiny_llama_dir), torch_dtype="float32")
    cache = tmp_path / "answers.jsonl"
    rows = [_prompt(p) for p in PROMPTS]
    first = answer_prompts(lm, rows, cache)
    assert [r.messages[:-1] for r in first] == [r.messages for r in rows]
    assert all(r.messages[-1]["role"] == "assistant" for r in first)

    asked: list[int] = []
    real = self_answers_module.greedy_answers

    def counting(lm: Any, conversations: Any, *args: Any, **kwargs: Any) -> list[str]:
        asked.append(len(conversations))
        return real(lm, conversations, *args, **kwargs)

    monkeypatch.setattr(self_answers_module, "greedy_answers", counting)
    assert answer_prompts(lm, rows, cache) == first and asked == []  # all read back
    lines = cache.read_text(encoding="utf-8").splitlines()
    cache.write_text("\n".join([lines[0][: len(lines[0]) // 2], *lines[1:]]) + "\n", encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="egtlm_core.training.self_answers"):
        again = answer_prompts(lm, rows, cache)
    assert again == first and asked == [1]  # only the truncated line is answered again
    assert "unreadable cached answer" in caplog.text


def test_anchor_prompts_get_the_base_models_answers(tmp_path: Path, tiny_llama_dir: Path) -> None:
    path = tmp_path / "prompts.jsonl"
    path.write_text(
        "".join(json.dumps({"messages": [{"role": "user", "content": p}]}) + "\n" for p in PROMPTS),
        encoding="utf-8",
    )
    lm = EgtLM(str(tiny_llama_dir), torch_dtype="float32")
    plan = TrainConfig(output_dir=str(tmp_path / "out"), sources=[{"name": str(path), "loss": "anchor"}])
    ((spec, loaded),) = load_sources(plan, lm)
    assert all(isinstance(r, ChatRow) for r in loaded)
    expected = [
        lm.chat(p, max_new_tokens=self_answers_module.SELF_ANSWER_MAX_NEW_TOKENS).text for p in PROMPTS
    ]
    assert [r.messages[-1]["content"] for r in loaded] == expected
    assert self_answer_cache(plan, 0, spec).is_file()
    with pytest.raises(ValueError, match="needs the model"):
        load_sources(plan)
    generative = TrainConfig(
        output_dir=str(tmp_path / "out"), sources=[{"name": str(path), "loss": "generative"}]
    )
    with pytest.raises(ValueError, match="PromptRow"):
        load_sources(generative, lm)


def _chat_root(tmp_path: Path) -> Path:
    """NQ train/dev, PubMedQA and MultiNLI files in their real shapes, a few rows each."""
    train_dir = tmp_path / "train"
    for split, questions in (
        ("train", ["who wrote hamlet", "capital of peru"]),
        ("dev", ["largest planet", "tallest tree", "is it?"]),
    ):
        folder = train_dir / f"nq-qed-{split}"
        folder.mkdir(parents=True)
        rows = [{"question_text": q, "paragraph_text": "Some text."} for q in questions]
        (folder / f"nq-{split}.jsonlines").write_text(
            "".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8"
        )
    (train_dir / "pubmedqa-pqal").mkdir()
    pubmed = {"1": {"QUESTION": "Do cells divide?", "CONTEXTS": ["They do."]}}
    (train_dir / "pubmedqa-pqal" / "ori_pqal.json").write_text(json.dumps(pubmed), encoding="utf-8")
    (train_dir / "mnli-dev-matched-hans").mkdir()
    header = "gold_label\tpremise\thypothesis\n"
    lines = [
        "entailment\tThe cat sat.\tA cat.",
        "contradiction\tThe cat sat.\tNo cat.",
        "entailment\tIt rained.\tWet.",
    ]
    (train_dir / "mnli-dev-matched-hans" / "mnli_development_set_number_of_correct_responses.txt").write_text(
        header + "\n".join(lines) + "\n", encoding="utf-8"
    )
    return tmp_path


def test_chat_prompts_interleave_questions_and_requests(tmp_path: Path) -> None:
    texts = [r.messages[0]["content"] for r in read_chat_prompts(_chat_root(tmp_path))]
    assert texts == [
        "who wrote hamlet",
        "Do cells divide?",
        "Rewrite this sentence in simpler words: The cat sat.",
        "capital of peru",
        "Write one sentence that follows from this: It rained.",
    ]


def test_chat_probe_asks_dev_questions_and_scores_agreement(tmp_path: Path) -> None:
    probe = ChatProbe.nq_dev(3, root=_chat_root(tmp_path))
    assert sorted(probe.prompts) == ["is it?", "largest planet?", "tallest tree?"]
    # token F1 after SQuAD normalisation: "paris is capital" vs "paris": p = 1/3, r = 1 -> 0.5
    assert ChatProbe.agreement(["Paris is the capital.", "blue"], ["Paris", "blue"]) == pytest.approx(75.0)
    with pytest.raises(ValueError, match="base answers"):
        ChatProbe.agreement(["a"], [])
    with pytest.raises(ValueError, match="at least one question"):
        ChatProbe.nq_dev(0, root=tmp_path)


def test_train_keeps_only_checkpoints_whose_plain_answers_hold(
    tmp_path: Path, selection_run_plan: Any, data_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = ["paris is the capital", "dogs are loyal"]
    answers = iter([base, ["paris", "tail tail tail"], ["paris is capital", "dogs are very loyal"]])
    monkeypatch.setattr(
        ChatProbe, "nq_dev", classmethod(lambda cls, size, seed=0, root=None: cls(("a", "b")))
    )
    monkeypatch.setattr(ChatProbe, "answers", lambda self, lm: next(answers))
    out = tmp_path / "out"
    (out / "self_answers").mkdir(parents=True)
    (out / "self_answers" / "0-old.jsonl").write_text("stale", encoding="utf-8")
    plan = selection_run_plan(max_steps=4, chat_probe=2, chat_floor=0.6)
    result = train(plan)
    evals = [h for h in result.history if "stsb_dev" in h]
    # token F1 after SQuAD normalisation ("the" dropped): step 2: "paris" vs "paris is capital" ->
    # p 1, r 1/3, F1 0.5, and 0 -> 25; step 4: 1 and "dogs are very loyal" p 3/4, r 1, F1 6/7 -> ~92.9
    assert [round(h["chat_agreement"], 1) for h in evals] == [25.0, 92.9]
    assert result.best_step == 4
    assert not (out / "self_answers").exists()  # a fresh run drops an earlier run's answers
    selection = json.loads((out / "selection.json").read_text(encoding="utf-8"))
    assert selection["chat_base"] == base
