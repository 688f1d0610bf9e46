"""The examples run as a user runs them: a fresh interpreter, the packaged default model, offline."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def run_example(name: str, *args: str, tmp_path: Path) -> str:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TMPDIR": str(tmp_path), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, str(REPO / "examples" / name), *args],
        cwd=tmp_path,  # not the repository: the example must find its packages by itself
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return done.stdout


def test_langchain_rag_chroma_example(tmp_path):
    out = run_example("langchain_rag_chroma.py", "--builtin", tmp_path=tmp_path)
    assert "Indexed" in out and "stored their KV states" in out
    reused = [int(line.split("reused ")[1].split()[0]) for line in out.splitlines() if "reused " in line]
    assert reused and all(n > 0 for n in reused)
    assert "StrOutputParser chain:" in out


def test_demo_example(tmp_path):
    out = run_example("demo.py", tmp_path=tmp_path)
    assert "Similarity of" in out and "time to first token" in out
    assert "Vectors are float32, L2-normalised: True" in out


def test_sentence_transformers_save_load_example(tmp_path):
    out = run_example("sentence_transformers_save_load.py", tmp_path=tmp_path)
    assert "EgtLMEncoder" in out and "modules.json" in out and "config_sentence_transformers.json" in out
    assert "'How tall is the Eiffel Tower?' -> 'The Eiffel Tower" in out
    assert "Reloaded vectors equal EgtLM.encode: True" in out


def test_chroma_prototype_example(tmp_path):
    out = run_example("chroma_prototype.py", tmp_path=tmp_path)
    assert "Indexed 4 documents; space cosine" in out and "Chroma rebuilt 'egtlm'" in out
    assert "'How tall is the Eiffel Tower?' -> eiffel" in out
    reused = [int(line.split("reused ")[1].split()[0]) for line in out.splitlines() if "(again)" in line]
    assert len(reused) == 2 and all(n > 0 for n in reused)
    assert "Models in memory: 1" in out


def test_llamaindex_query_engine_example(tmp_path):
    out = run_example("llamaindex_query_engine.py", tmp_path=tmp_path)
    assert "Indexed 4 documents in Chroma; stored their KV states (4 entries)" in out
    reports = [line for line in out.splitlines() if line.strip().startswith("reused ")]
    reused = [int(line.split("reused ")[1].split()[0]) for line in reports]
    assert len(reused) == 5 and reused[1] == reused[3] == 0  # full prefill reuses nothing
    assert all(reused[i] > 0 for i in (0, 2, 4)) and all("exact slots 1" in reports[i] for i in (0, 2, 4))
    assert "Eiffel Tower" in out.split("'How tall is the Eiffel Tower?'")[1].split("full prefill")[0]
    assert "Models in memory: 1" in out
