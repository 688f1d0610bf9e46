"""`egtlm train CONFIG.yaml` on a tiny model: the output loads, a bad config is one line and status 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from egtlm_core import EgtLM
from egtlm_core.cli.main import main

pytest.importorskip("peft")
pytest.importorskip("yaml")


def test_train_command(
    tmp_path: Path, tiny_llama_dir: Path, data_root: Path, capsys: pytest.CaptureFixture
) -> None:
    rows = tmp_path / "pairs.jsonl"
    pairs = [("A cat sat on the mat.", "A cat is on the mat.", 4.5), ("Paris is in France.", "A dog.", 0.5)]
    rows.write_text("\n".join(json.dumps({"text1": a, "text2": b, "score": s}) for a, b, s in pairs) + "\n")
    config = tmp_path / "run.yaml"
    config.write_text(
        f"output_dir: out\nmodel: {tiny_llama_dir}\nmax_steps: 2\neval_steps: 2\neval_pairs: 5\n"
        f"warmup_steps: 0\nlora_r: 4\nsources:\n  - {{name: pairs.jsonl, loss: cosent}}\n",
        encoding="utf-8",
    )
    assert main(["train", str(config), "--device", "cpu"]) == 0  # the accelerator flag, on a CPU
    assert "STS-B dev Spearman" in capsys.readouterr().out
    assert json.loads((tmp_path / "out" / "train_config.json").read_text())["device"] == "cpu"
    EgtLM(str(tmp_path / "out"), torch_dtype="float32").encode(["a cat"])


def test_bad_config_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    config = tmp_path / "run.yaml"
    config.write_text("output_dir: out\nsources: [{name: snli}]\nlearning_rat: 1e-4\n", encoding="utf-8")
    assert main(["train", str(config)]) == 2
    assert "unknown settings ['learning_rat']" in capsys.readouterr().err
    assert main(["train", str(tmp_path / "missing.yaml")]) == 2
