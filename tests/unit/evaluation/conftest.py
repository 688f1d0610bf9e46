from __future__ import annotations

from pathlib import Path

import pytest
from eval_data import write_data


@pytest.fixture()
def data_root(tmp_path: Path) -> Path:
    return write_data(tmp_path / "data")
