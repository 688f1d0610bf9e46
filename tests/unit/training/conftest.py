from __future__ import annotations

from pathlib import Path

import pytest
from eval_data import write_data


@pytest.fixture()
def data_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Synthetic shared data (STS-B dev for checkpoint selection), found through EGTLM_DATA_DIR."""
    root = write_data(tmp_path / "data")
    monkeypatch.setenv("EGTLM_DATA_DIR", str(root))
    return root


@pytest.fixture()
def selection_run_plan(tmp_path: Path, tiny_llama_dir: Path):
    """Makes a few-step LoRA run over four query/passage rows that evaluates every 2 steps: for tests
    of checkpoint selection (the probes are mocked by the caller)."""
    return lambda **settings: _selection_run_plan(tmp_path, tiny_llama_dir, **settings)


def _selection_run_plan(tmp_path: Path, model_dir: Path, **settings):
    import json

    from egtlm_core.training import TrainConfig

    rows = tmp_path / "rows.jsonl"
    rows.write_text(
        "\n".join(json.dumps({"query": f"q{i}", "pos": [f"passage {i}"]}) for i in range(4)), encoding="utf-8"
    )
    defaults = dict(
        output_dir=str(tmp_path / "out"),
        model=str(model_dir),
        sources=[{"name": str(rows)}],
        lora_r=4,
        eval_pairs=10,
        warmup_steps=0,
        eval_steps=2,
        batch_size=2,
    )
    return TrainConfig(**{**defaults, **settings})
