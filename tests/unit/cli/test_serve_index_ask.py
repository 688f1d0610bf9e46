"""`egtlm serve` as its own process, `egtlm index` / `egtlm ask` against it and in-process."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import httpx
import pytest

from egtlm_core.server import free_port

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "EGTLM_CPU_DTYPE": "float32"}
CLI = [sys.executable, "-m", "egtlm_core.cli.main"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    (root / "france.md").write_text("# France\n\nParis is the capital of France.\n\nLyon is on the Rhone.\n")
    (root / "sub").mkdir()
    (root / "sub" / "germany.txt").write_text("Berlin is the capital of Germany.")
    (root / "skip.bin").write_bytes(b"\x00\x01")
    return root


@pytest.fixture(scope="module")
def served(tiny_llama_dir):
    port = free_port()
    args = [
        *CLI,
        "serve",
        str(tiny_llama_dir),
        "--port",
        str(port),
        "--served-name",
        "tiny",
        "--dtype",
        "float32",
    ]
    process = subprocess.Popen(args, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            assert process.poll() is None, process.communicate()[1]
            try:
                status = httpx.get(url + "/health", timeout=2).status_code
            except httpx.TransportError:
                status = None
            if status == 200:
                break
            time.sleep(0.05)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], env=ENV, capture_output=True, text=True, timeout=120)


def test_index_and_ask_against_the_server(served, corpus):
    indexed = _run("index", str(corpus), "--server", served)
    assert indexed.returncode == 0, indexed.stderr
    assert "Indexed 2 chunks from 2 files" in indexed.stderr
    docs = httpx.get(served + "/v1/documents").json()["data"]
    assert {d["metadata"]["source"] for d in docs} == {
        str(corpus / "france.md"),
        str(corpus / "sub" / "germany.txt"),
    }
    asked = _run(
        "ask", "What is the capital of France?", "-k", "2", "--max-new-tokens", "4", "--server", served
    )
    assert asked.returncode == 0, asked.stderr
    assert "Documents used" in asked.stderr and "france.md#0" in asked.stderr
    reused = int(asked.stderr.split("Documents used (")[1].split(" ")[0])
    assert reused > 0


def test_index_and_ask_in_process(tiny_llama_dir, corpus, tmp_path):
    index_file = str(tmp_path / "index.json")
    common = ["--model", str(tiny_llama_dir), "--dtype", "float32", "--index-file", index_file]
    indexed = _run("index", str(corpus / "france.md"), *common)
    assert indexed.returncode == 0, indexed.stderr
    asked = _run("ask", "Where is Lyon?", "-k", "1", "--max-new-tokens", "4", *common)
    assert asked.returncode == 0, asked.stderr
    assert "france.md#0" in asked.stderr


def test_ask_without_an_index_is_a_usage_error(tiny_llama_dir, tmp_path):
    asked = _run("ask", "q", "--model", str(tiny_llama_dir), "--index-file", str(tmp_path / "none.json"))
    assert asked.returncode == 2 and "egtlm index" in asked.stderr


LOADED = "import sys; from egtlm_core.cli.main import main; rc = main(sys.argv[1:]); "
LOADED += (
    "print('heavy:', sorted(m for m in ('torch', 'transformers', 'scipy') if m in sys.modules)); sys.exit(rc)"
)


def test_a_client_of_the_server_and_help_import_no_torch(served):
    """`egtlm --help` and `egtlm ask --server` load no model, so they pay no torch/transformers import
    (~3-5 s of a cold start): the CLI imports what a command uses, when it runs."""
    for args in (["--help"], ["ask", "Where is Berlin?", "--max-new-tokens", "2", "--server", served]):
        done = subprocess.run(
            [sys.executable, "-c", LOADED, *args], env=ENV, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
        assert "heavy: []" in done.stdout, (args, done.stdout[-300:])
