from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "evaluation"))

from eval_data import write_data  # noqa: E402


@pytest.fixture()
def data_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Synthetic shared data (STS-B dev for checkpoint selection), found through EGTLM_DATA_DIR."""
    root = write_data(tmp_path / "data")
    monkeypatch.setenv("EGTLM_DATA_DIR", str(root))
    return root
