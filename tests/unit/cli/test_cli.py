"""The `egtlm` command line, run in-process through `main([...])` on a tiny random model."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers

import egtlm_core
from egtlm_core import EgtLM, format_instruction
from egtlm_core.cli.io import split_lines
from egtlm_core.cli.main import main
from egtlm_core.loading import devices

REPO = Path(__file__).resolve().parents[3]  # tests/unit/cli/test_cli.py -> the repository
LINES = [
    "The quick brown fox jumps over the lazy dog.",
    "Paris is the capital of France.",
    "A cat sat on the mat.",
    "Retrieval augmented generation reads documents.",
    "Numbers like 12345.",
]


class TtyInput(io.StringIO):
    """stdin as a terminal would look, for the interactive chat."""

    def isatty(self) -> bool:
        return True


@pytest.fixture(scope="module")
def ref(tiny_llama_dir: Path) -> EgtLM:
    """The same model the CLI loads (fp32, so results are exact and do not depend on the CPU)."""
    return EgtLM(str(tiny_llama_dir), torch_dtype="float32")


@pytest.fixture
def model_args(tiny_llama_dir: Path) -> list[str]:
    return ["--model", str(tiny_llama_dir), "--dtype", "float32"]


@pytest.fixture
def texts_file(tmp_path: Path) -> Path:
    path = tmp_path / "texts.txt"
    path.write_text("\n".join(LINES) + "\n", encoding="utf-8")
    return path


@pytest.fixture(autouse=True)
def empty_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A default-model cache of its own, so no test sees (or fills) the user's."""
    cache = tmp_path / "egtlm-cache"
    monkeypatch.setenv("EGTLM_CACHE_DIR", str(cache))
    return cache


def read_jsonl(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines()]


# --------------------------------------------------------------------------- info


def test_info_without_model_reports_setup_and_does_not_download(capsys, empty_cache: Path) -> None:
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert f"egtlm {egtlm_core.__version__}" in out
    assert f"torch {torch.__version__}" in out and f"transformers {transformers.__version__}" in out
    assert "device: cpu" in out or "device: cuda" in out
    assert "dtype 'auto': " in out
    assert devices.cpu_auto_dtype_and_reason()[1] in out or "CUDA" in out
    assert str(empty_cache / "models" / "SmolLM2-135M-Instruct") in out
    assert "not converted yet" in out
    assert "model:" not in out.replace("default model:", "")
    assert not (empty_cache / "models").exists()


def test_info_json_sees_a_converted_default_model(capsys, empty_cache: Path) -> None:
    target = empty_cache / "models" / "SmolLM2-135M-Instruct"
    target.mkdir(parents=True)
    for name in ("config.json", "model.safetensors", "tokenizer_config.json"):
        (target / name).write_text("{}")
    assert main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["default_model"] == {**info["default_model"], "path": str(target), "converted": True}
    assert info["egtlm"] == egtlm_core.__version__ and info["torch"] == torch.__version__
    assert info["auto_dtype"] in ("float32", "bfloat16") and info["auto_dtype_reason"]
    assert "model" not in info


def test_info_with_model_describes_it(capsys, ref: EgtLM, model_args: list[str]) -> None:
    assert main(["info", *model_args]) == 0
    out = capsys.readouterr().out
    n_params = sum(p.numel() for p in ref.model.parameters())
    for fact in (
        "architecture: LlamaForCausalLM",
        "layers: 2",
        "hidden size: 64",
        "embedding dim: 64",
        f"vocab size: {ref.model.config.vocab_size}",
        "chat template: yes",
        f"parameters: {n_params:,}",
        "dtype: float32",
    ):
        assert fact in out, fact


def test_info_json_with_model(capsys, ref: EgtLM, model_args: list[str]) -> None:
    assert main(["info", "--json", *model_args]) == 0
    model = json.loads(capsys.readouterr().out)["model"]
    assert model["architecture"] == "LlamaForCausalLM"
    assert (model["layers"], model["hidden_size"], model["embedding_dim"]) == (2, 64, 64)
    assert model["vocab_size"] == ref.model.config.vocab_size
    assert model["chat_template"] is True
    assert model["parameters"] == sum(p.numel() for p in ref.model.parameters())


def test_module_entry_point_runs_info(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        "EGTLM_CACHE_DIR": str(tmp_path),
        "EGTLM_CPU_DTYPE": "float32",
    }
    proc = subprocess.run(
        [sys.executable, "-m", "egtlm_core.cli.main", "info"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert f"egtlm {egtlm_core.__version__}" in proc.stdout
    if not torch.cuda.is_available():
        assert "float32 (set by EGTLM_CPU_DTYPE=float32)" in proc.stdout
    assert "Traceback" not in proc.stderr


# --------------------------------------------------------------------------- encode


def test_encode_file_to_npy_matches_the_api(capsys, ref, model_args, texts_file, tmp_path) -> None:
    out = tmp_path / "vectors.npy"
    args = ["encode", *model_args, "--input", str(texts_file), "--output", str(out), "--batch-size", "2"]
    assert main(args) == 0
    assert capsys.readouterr().out == ""
    vectors = np.load(out)
    assert vectors.dtype == np.float32 and vectors.shape == (len(LINES), 64)
    np.testing.assert_allclose(vectors, ref.encode(LINES, batch_size=2), atol=1e-6)


def test_encode_queries_to_jsonl_file(ref, model_args, texts_file, tmp_path) -> None:
    out = tmp_path / "vectors.jsonl"
    assert main(["encode", *model_args, "--input", str(texts_file), "--output", str(out), "--query"]) == 0
    rows = read_jsonl(out.read_text(encoding="utf-8"))
    assert [r["index"] for r in rows] == list(range(len(LINES)))
    np.testing.assert_allclose(np.array([r["embedding"] for r in rows]), ref.encode_queries(LINES), atol=1e-6)


def test_encode_stdin_to_stdout_with_instruction(capsys, monkeypatch, ref, model_args) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("\r\n".join(LINES)))  # CRLF, no final newline
    assert main(["encode", *model_args, "--instruction", "Find animals"]) == 0
    rows = read_jsonl(capsys.readouterr().out)
    expected = ref.encode(LINES, instruction=format_instruction("Find animals"))
    assert [r["index"] for r in rows] == list(range(len(LINES)))
    np.testing.assert_allclose(np.array([r["embedding"] for r in rows]), expected, atol=1e-6)


def test_encode_dim_truncates(capsys, ref, model_args, texts_file) -> None:
    assert main(["encode", *model_args, "--input", str(texts_file), "--dim", "8"]) == 0
    vectors = np.array([r["embedding"] for r in read_jsonl(capsys.readouterr().out)])
    assert vectors.shape == (len(LINES), 8)
    np.testing.assert_allclose(vectors, ref.encode(LINES, dim=8), atol=1e-6)


def test_encode_jsonl_input(capsys, ref, model_args, tmp_path) -> None:
    path = tmp_path / "docs.jsonl"
    path.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(LINES)), "utf-8")
    assert main(["encode", *model_args, "--input", str(path), "--document"]) == 0
    vectors = np.array([r["embedding"] for r in read_jsonl(capsys.readouterr().out)])
    np.testing.assert_allclose(vectors, ref.encode_documents(LINES), atol=1e-6)


def test_encode_blank_lines_fail_with_their_numbers(capsys, model_args, tmp_path) -> None:
    path = tmp_path / "gaps.txt"
    path.write_text("first\n\nthird\n   \nfifth\n", encoding="utf-8")
    assert main(["encode", *model_args, "--input", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "lines 2, 4" in captured.err and "--skip-empty" in captured.err
    assert "Traceback" not in captured.err and len(captured.err.strip().splitlines()) == 1


def test_encode_skip_empty_keeps_input_positions(capsys, ref, model_args, tmp_path) -> None:
    path = tmp_path / "gaps.txt"
    path.write_text("first\n\nthird\n", encoding="utf-8")
    assert main(["encode", *model_args, "--input", str(path), "--skip-empty"]) == 0
    rows = read_jsonl(capsys.readouterr().out)
    assert [r["index"] for r in rows] == [0, 2]
    vectors = np.array([r["embedding"] for r in rows])
    np.testing.assert_allclose(vectors, ref.encode(["first", "third"]), atol=1e-6)


def test_encode_shows_progress_on_stderr_for_long_inputs(capsys, model_args, texts_file) -> None:
    args = ["encode", *model_args, "--input", str(texts_file), "--batch-size", "1"]
    assert main(args) == 0
    assert "Encoding" in capsys.readouterr().err
    assert main([*args, "--no-progress"]) == 0
    assert "Encoding" not in capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--input", "missing.txt"], "does not exist"),
        (["--output", "vectors.csv"], "Unknown output type '.csv'"),
        (["--dim", "1000"], "dim"),  # a ValueError from the core
        (["--dtype", "int8"], "Unknown dtype 'int8'"),
        (["--jsonl"], "Line 1 is not valid JSON"),
    ],
)
def test_encode_errors_are_one_line_and_exit_2(capsys, model_args, texts_file, extra, message) -> None:
    assert main(["encode", *model_args, "--input", str(texts_file), *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and err.startswith("egtlm: error: ") and "Traceback" not in err


def test_bad_option_value_exits_2_without_raising(capsys, model_args) -> None:
    assert main(["encode", *model_args, "--batch-size", "0"]) == 2
    assert "--batch-size: expected a positive integer" in capsys.readouterr().err
    assert main(["--version"]) == 0


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--replicas", "2"], "need a Redis they all reach"),
        (["--redis", "localhost:6379"], "redis://host:6379/0"),
    ],
)
def test_serve_refuses_replicas_without_a_shared_redis(capsys, extra, message) -> None:
    """Checked before Ray or a model starts: two replicas without one Redis would not share documents."""
    assert main(["serve", *extra]) == 2
    assert message in capsys.readouterr().err


def test_split_lines() -> None:
    assert split_lines("a\r\nb\n") == ["a", "b"]
    assert split_lines("a\n\nb") == ["a", "", "b"]
    assert split_lines("") == []
    assert split_lines("a\u2028b\n") == ["a\u2028b"]  # only newlines separate texts


# --------------------------------------------------------------------------- chat


def test_chat_prompt_streams_the_api_answer(capsys, ref, model_args) -> None:
    assert main(["chat", *model_args, "--max-new-tokens", "12", "--system", "Be brief.", "Hello there"]) == 0
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello there"}]
    expected = ref.chat(messages, max_new_tokens=12).text
    assert capsys.readouterr().out == expected + "\n"


def test_chat_reads_the_prompt_from_stdin(capsys, monkeypatch, ref, model_args) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("What is a fox?\n"))
    assert main(["chat", *model_args, "--max-new-tokens", "10"]) == 0
    expected = ref.chat([{"role": "user", "content": "What is a fox?"}], max_new_tokens=10).text
    assert capsys.readouterr().out == expected + "\n"


def test_chat_empty_stdin_is_an_error(capsys, monkeypatch, model_args) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("\n"))
    assert main(["chat", *model_args]) == 2
    assert "prompt is empty" in capsys.readouterr().err


def test_chat_interactive_keeps_the_conversation(capsys, monkeypatch, ref, model_args) -> None:
    monkeypatch.setattr(sys, "stdin", TtyInput("Hello\nWhat is a cat?\n\nnot read\n"))
    assert main(["chat", *model_args, "--max-new-tokens", "6"]) == 0
    captured = capsys.readouterr()
    first = ref.chat([{"role": "user", "content": "Hello"}], max_new_tokens=6).text
    second = ref.chat(
        [
            {"role": "user", "content": "Hello"},
            {"role": "assistant", "content": first},
            {"role": "user", "content": "What is a cat?"},
        ],
        max_new_tokens=6,
    ).text
    assert captured.out == f"{first}\n{second}\n"
    assert captured.err.count(">>> ") == 3
