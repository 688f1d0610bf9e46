"""The benchmarks still run against the core: every script imports and answers `--help`, and every
one runs end to end in its smallest mode on a tiny random model (tests/tiny_models.py) and a tiny copy
of the shared data (conftest.py, via `$EGTLM_DATA_DIR`), writing its page or JSON into a temp folder,
whose contents are checked. A renamed or removed core name, result field or option fails here, in CI,
instead of the next time someone runs a benchmark (the layout test holds them to public names)."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest
from rag_fixtures import DOCS

from egtlm_core.loading.devices import cpu_auto_dtype

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
SCRIPTS = sorted(
    p for p in BENCHMARKS.glob("*.py") if not p.name.startswith("_") and p.stem != "rag_ttft_page"
)
QUESTIONS = ["What is the capital of France?", "What does the fox jump over?", "Where did the cat sit?"]
ANSWERS = ["Paris", "the lazy dog", "on the mat"]


@pytest.fixture
def benchmarks(monkeypatch: pytest.MonkeyPatch) -> None:
    """benchmarks/ on sys.path, as when a script runs (they import `_common` and each other)."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))


def load(name: str) -> ModuleType:
    module = importlib.import_module(name)
    assert Path(module.__file__ or "").parent == BENCHMARKS, f"{name} resolved to {module.__file__}"
    return module


@pytest.fixture
def xquad(tmp_path: Path) -> Path:
    """A three-paragraph file in XQuAD's (SQuAD's) format, one question each."""
    paragraphs = [
        {"context": doc, "qas": [{"id": f"q{i}", "question": q, "answers": [{"text": a}]}]}
        for i, (doc, q, a) in enumerate(zip(DOCS, QUESTIONS, ANSWERS, strict=True))
    ]
    path = tmp_path / "xquad.en.json"
    path.write_text(json.dumps({"data": [{"title": "tiny", "paragraphs": paragraphs}]}), encoding="utf-8")
    return path


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: p.name)
def test_each_benchmark_imports_and_answers_help(
    path: Path, benchmarks: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
):
    module = load(path.stem)
    monkeypatch.setattr(sys, "argv", [str(path), "--help"])
    with pytest.raises(SystemExit) as done:
        module.main()
    assert done.value.code == 0
    assert capsys.readouterr().out.startswith("usage:")


def test_the_shared_helpers_import_and_compute(benchmarks: None, xquad: Path):
    common = load("_common")
    assert load("rag_ttft_page").CONDITIONS == ("full", "warm", "disk", "int8")
    assert common.med([3.0, 1.0, 2.0]) == 2.0 and common.median_ms([0.001, 0.003]) == pytest.approx(2.0)
    assert common.ratio([2.0, 9.0, 4.0], [1.0, 3.0, 1.0]) == 3.0  # median of per-run ratios
    assert common.iqr([5.0]) == (5.0, 5.0)
    pairs = common.xquad_paragraphs(xquad)  # read by egtlm_core.evaluation.read_xquad
    assert [text for text, _ in pairs] == DOCS and pairs[1][1].question == QUESTIONS[1]


def test_rag_ttft_runs_on_a_tiny_model_and_renders_its_page(
    benchmarks: None, tiny_llama_dir: Path, xquad: Path, tmp_path: Path
):
    rag_ttft = load("rag_ttft")
    out, saved = tmp_path / "page", tmp_path / "ttft.json"
    out.mkdir()
    common = ["--ks", "1", "2", "--out", str(out)]
    rag_ttft.main(
        ["--model", str(tiny_llama_dir), "--data", str(xquad), "--dtypes", "float32", "--repeats", "1"]
        + ["--target-tokens", "10", "--json", str(saved), *common]
    )
    res = json.loads(saved.read_text())["results"][0]
    for k in (1, 2):
        assert 0 < res["wall_ms"][f"floor@{k}"] < res["wall_ms"][f"warm@{k}"]  # the answer's own forward
        assert res["warm_over_floor"][str(k)] > 1
    assert res["first_token_same_as_full"]["warm@1"]  # one document after the prefix is exact
    assert res["breakdown"]["int8"]["fetch"] > 0 and set(res["storage"]) == {"warm", "disk", "int8"}
    assert set(res["indexing_s"]) == {"batched", "one per document"} and len(res["doc_tokens"]) == 2
    page = (out / "rag_ttft.md").read_text()
    assert "two-pass" not in page and "| warm/floor |" in page and (out / "rag_ttft.png").stat().st_size

    (out / "rag_ttft.md").unlink()
    rag_ttft.main(["--render", str(saved), *common])
    assert (out / "rag_ttft.md").read_text() == page


def test_rag_quality_runs_on_a_tiny_model_and_writes_its_page(
    benchmarks: None, tiny_llama_dir: Path, xquad: Path, tmp_path: Path
):
    rag_quality = load("rag_quality")
    saved = tmp_path / "quality.json"
    rag_quality.main(
        ["--model", str(tiny_llama_dir), "--data", str(xquad), "--dtype", "float32", "--out", str(tmp_path)]
        + ["--n", "2", "--k", "2", "--n-single", "1", "--n-single-fp32", "1", "--fp32-check", "1"]
        + ["--floor-n", "1", "--max-new-tokens", "4", "--recompute", "2", "--json", str(saved)]
    )
    res = json.loads(saved.read_text())["results"]
    assert [set(r["outputs"]) for r in res["rows"]] == [{"full", "reuse", "recompute", "int8", "no-RAG"}] * 2
    agree = res["agree"]
    assert agree["full one-forward vs full"]["kl"] < 1e-6  # float32: one forward equals step by step
    assert agree["reuse vs full"]["positions"] == agree["int8 vs reuse"]["positions"] > 0
    assert res["single"][0]["same"] and res["single_agree"]["top1"] == 1.0  # k = 1 is exact
    assert res["int8_entries"] in (3, 4) and res["int8_tokens"] > 0  # 2-3 distinct paragraphs + the prefix
    assert (
        "## Results" in (tmp_path / "rag_quality.md").read_text() and (tmp_path / "rag_quality.png").exists()
    )


def test_server_load_counts_batches_from_the_metrics_endpoint(benchmarks: None, tiny_llama_dir: Path):
    """`server_load.py` drives a real server and reads its batch sizes from `/metrics`."""
    import asyncio

    from egtlm_core import EgtLM
    from egtlm_core.server import BackgroundServer, ServerSettings

    server_load = load("server_load")
    f32 = {"torch_dtype": "float32"}
    expected = dict(zip(DOCS, EgtLM(str(tiny_llama_dir), **f32).encode_documents(DOCS), strict=True))

    def pick(rng):
        text = rng.choice(DOCS)
        return lambda client, phase: server_load.embed_request(client, text, expected[text], phase)

    settings = ServerSettings(
        model=str(tiny_llama_dir), model_kwargs=f32, served_name=server_load.MODEL, max_batch=8, metrics=True
    )
    with BackgroundServer(settings) as server:
        phase = asyncio.run(server_load.drive(server.url, 4, 1.0, server_load.Phase("batched"), pick))
        texts, calls = server_load.batch_texts(server.url)
    assert not phase.errors  # every embedding equal to the in-process one
    assert texts == len(phase.latencies["embeddings"]) and 1 <= calls <= texts


# --- every other benchmark's smallest mode: a tiny random model, the tiny data (conftest.py), temp output
def run_script(name: str, argv: list[str], monkeypatch: pytest.MonkeyPatch) -> object:
    """`python benchmarks/<name>.py ARGV`, in this process (torch imported once for all the tests)."""
    module = load(name)
    monkeypatch.setattr(sys, "argv", [str(BENCHMARKS / f"{name}.py"), *map(str, argv)])
    return module.main()


def test_inbedder_small(benchmarks: None, tiny_llama_dir: Path, tiny_data: Path, tmp_path: Path, monkeypatch):
    saved = tmp_path / "inbedder.json"
    argv = ["--model", tiny_llama_dir, "--per-class", 2, "--pools", "first", "--dtype", "float32"]
    run_script("inbedder", [*argv, "--json", saved], monkeypatch)
    res = json.loads(saved.read_text())
    assert res["found"] == {"person": 2, "date": 2, "place": 2, "number": 2}  # every kind labelled
    assert {"plain encode", "answer states (first) + instruction"} <= set(res["rows"])
    assert all(0 <= row["v_measure"] <= 1 for row in res["rows"].values())


def test_rerank_small(benchmarks: None, tiny_llama_dir: Path, tiny_data: Path, tmp_path: Path, monkeypatch):
    saved = tmp_path / "rerank.json"
    argv = ["--model", tiny_llama_dir, "--queries", 3, "--docs", 6, "--top", 3, "--dtype", "float32"]
    run_script("rerank", [*argv, "--json", saved], monkeypatch)
    res = json.loads(saved.read_text())
    assert res["queries"] == 3 and res["documents"] == 6
    assert {"dense", "bm25", "dense + rerank (yes_no)", "bm25 + rerank (query_likelihood)"} <= set(
        res["rows"]
    )
    assert set(res["latency_s"]) == {"yes_no", "query_likelihood"}


def test_index_throughput_small(
    benchmarks: None, tiny_llama_dir: Path, tiny_data: Path, tmp_path: Path, monkeypatch
):
    page = tmp_path / "index_throughput.md"
    argv = ["--model", tiny_llama_dir, "--scifact-docs", 6, "--scifact-queries", 3, "--page", page]
    run_script("index_throughput", argv, monkeypatch)
    text = page.read_text()
    assert text.startswith("# Indexing: one pass vs two passes")
    assert "| XQuAD | 8 |" in text and "| SciFact | 6 |" in text and "recall@5" in text


def test_quality_small(benchmarks: None, tiny_llama_dir: Path, tiny_data: Path, tmp_path: Path, monkeypatch):
    saved, out = tmp_path / "quality.json", tmp_path / "page"
    argv = ["--base", tiny_llama_dir, "--tasks", "sts", "scifact", "xquad", "rag", "--limit", 3]
    run_script(
        "quality",
        [*argv, "--scifact-docs", 6, "--rag-questions", 2, "--out", out, "--json", saved],
        monkeypatch,
    )
    res = json.loads(saved.read_text())
    assert set(res["tasks"]) == {"sts", "scifact", "xquad", "rag"} and list(res["tasks"]["sts"]) == ["base"]
    text = (out / "quality.md").read_text()
    assert "## Details" in text and "## Reproduce" in text and (out / "quality.png").stat().st_size


def test_st_module_small(benchmarks: None, tiny_llama_dir: Path, tiny_data: Path, monkeypatch, capsys):
    """Stock `SentenceTransformer(dir)` loads the tiny checkpoint offline too: all three systems run."""
    argv = ["--model", tiny_llama_dir, "--n", 8, "--repeats", 1, "--wait-quiet", 0]
    run_script("st_module", argv, monkeypatch)
    out = capsys.readouterr().out
    assert "| system | dtype | tokens/sentence | median s | sentences/s | vs EgtLM.encode |" in out
    auto = str(cpu_auto_dtype()).removeprefix("torch.")  # bfloat16 on a CPU with native bf16 math
    for system in (f"| EgtLM.encode | {auto} |", "| ST + EgtLMEncoder |", "| SentenceTransformer(dir) |"):
        assert system in out
    assert "max |ST + EgtLMEncoder - EgtLM.encode|" in out and "8 STS-B test sentences" in out


def test_encode_throughput_small(
    benchmarks: None, tiny_llama_dir: Path, tiny_data: Path, tmp_path, monkeypatch
):
    out = tmp_path / "page"
    sizes = ["--n", 8, "--repeats", 1, "--default-n", 4, "--chunk", 4, "--batch-size", 4, "--peak-sizes", 64]
    argv = ["--model", tiny_llama_dir, *sizes, "--no-investigate", "--dtype", "float32", "--out", out]
    run_script("encode_throughput", argv, monkeypatch)
    page = (out / "encode_throughput.md").read_text()
    assert page.startswith("#") and "same work" in page and "EgtLM()" in page and "matmul peak" in page
    assert (out / "encode_throughput.png").stat().st_size


def test_langchain_tool_calling_small(benchmarks: None, tiny_llama_4k_dir: Path, tmp_path: Path, monkeypatch):
    saved = tmp_path / "tool_calling.json"
    argv = ["--model", tiny_llama_4k_dir, "--seeds", 1, "--limit", 2, "--dtype", "float32", "--out", saved]
    run_script("langchain_tool_calling", argv, monkeypatch)
    res = json.loads(saved.read_text())
    assert res["max_tokens"] == 64 and "tiny4k" in res["model"]
    rates = res["rates"]
    assert {"auto_call", "auto_call_sampled", "forced_args_right", "free_json_valid"} <= set(rates)
    assert rates["auto_call"].endswith("/2") and rates["result_used (ours: words + user turn)"].endswith("/2")
    assert rates["forced_valid"] == "2/2" and rates["structured_valid (json_schema)"] == "4/4"  # grammar


def test_decode_speed_small(benchmarks: None, tiny_llama_dir: Path, tmp_path: Path, monkeypatch):
    page = tmp_path / "decode_speed.md"
    argv = ["--model", tiny_llama_dir, "--tokens", 4, "--rounds", 1, "--bandwidth-mb", 8, "--out", page]
    run_script("decode_speed", argv, monkeypatch)
    text = page.read_text()
    assert text.startswith("# Decoding speed") and f"the model `{tiny_llama_dir}`" in text
    assert (
        "| system | dtype | ms / token | floor ms | × floor |" in text
        and "| egtlm bfloat16 | bfloat16 |" in text
        and "| egtlm weights='int8' (opt-in) |" in text
    )
    assert "## Where a decode step's time goes" in text and "matrix products" in text


@pytest.mark.slow  # three fresh processes each importing torch: 20-25 s on a busy 2-core machine
def test_cold_start_small(benchmarks: None, tiny_llama_4k_dir: Path, tmp_path: Path, monkeypatch):
    """Three torch-importing processes (index, ask, the phase probe): the tiny model has no adapter, so
    the no-merged-copy run would time the same thing. 4096 positions: `egtlm ask` puts the retrieved
    README chunks (~3,500 tiny-BPE tokens) in its prompt."""
    page = tmp_path / "cold_start.md"
    argv = ["--model", tiny_llama_4k_dir, "--rounds", 1, "--cases", "import", "ask", "--out", page]
    run_script("cold_start", argv, monkeypatch)
    text = page.read_text()
    assert text.startswith("# Cold start") and f"--model {tiny_llama_4k_dir} --cases import ask" in text
    for row in ("| import egtlm_core |", "| egtlm ask |", "| load the model |", "| first token (reuse) |"):
        assert row in text
    assert "no merged copy" not in text and "Keeping the adapter merged" not in text


def test_gpu_check_small(benchmarks: None, tiny_llama_dir: Path, tmp_path: Path, monkeypatch):
    """`--size tiny --device cpu`, the tiny model's tokenizer instead of the packaged model's."""
    saved = tmp_path / "gpu_check.json"
    argv = ["--size", "tiny", "--device", "cpu", "--dtype", "float32", "--tokenizer", tiny_llama_dir]
    run_script(
        "gpu_check",
        [*argv, "--ks", 1, 2, "--repeats", 1, "--new-tokens", 4, "--encode-texts", 4, "--json", saved],
        monkeypatch,
    )
    rows = json.loads(saved.read_text())["rows"]
    assert {"k=1", "k=2", "decode_tokens_per_s", "encode_texts_per_s", "index_s"} <= set(rows)
    assert set(rows["k=2"]) == {
        "full_s",
        "reuse_s",
        "reuse_recompute0_s",
        "ratio_default",
        "ratio_recompute0",
    }


def test_server_load_small(
    benchmarks: None, tiny_llama_dir: Path, tiny_data: Path, tmp_path: Path, monkeypatch
):
    out = tmp_path / "page"
    argv = ["--model", tiny_llama_dir, "--clients", 2, "--seconds", 0.5, "--mixed-seconds", 1, "--out", out]
    assert run_script("server_load", argv, monkeypatch) == 0  # every response checked, no errors
    record = json.loads((out / "server_load.json").read_text())
    assert not record["errors"] and len(record["ratios"]) == 2
    assert {(r[0], r[1]) for r in record["rows"]} >= {
        ("unbatched", "embeddings"),
        ("batched", "embeddings"),
        ("mixed", "embeddings"),
    }
    assert (out / "server_load.md").read_text().startswith("# `egtlm serve` under load")


def test_langchain_rag_small(
    benchmarks: None, tiny_llama_dir: Path, tiny_data: Path, tmp_path: Path, monkeypatch
):
    """Both stacks on the tiny model: langchain-huggingface loads a local folder offline."""
    pytest.importorskip(
        "langchain_huggingface", reason="langchain-huggingface (the bench extra) not installed"
    )
    out = tmp_path / "page"
    argv = ["--model", tiny_llama_dir, "--n", 3, "--k", 2, "--rounds", 1, "--max-new-tokens", 4]
    run_script("langchain_rag", [*argv, "--dtype", "float32", "--out", out], monkeypatch)
    text = (out / "langchain_rag.md").read_text()
    assert text.startswith("#") and "langchain-huggingface" in text and "egtlm, no reuse" in text
    assert "time to first token" in text and (out / "langchain_rag.png").stat().st_size


def llamaindex_argv(model: Path) -> list[object]:
    return ["--model", model, "--n", 3, "--k", 2, "--max-new-tokens", 4, "--dtype", "float32"]


def test_llamaindex_rag_small_egtlm_side(
    benchmarks: None, tiny_llama_4k_dir: Path, tiny_data: Path, tmp_path: Path, monkeypatch
):
    """`--no-huggingface`: the egtlm engines only (llama-index's huggingface packages are no test
    dependency). 4096 positions: llama-index's prompt helper leaves no room for chunks in 512."""
    saved = tmp_path / "llamaindex.json"
    run_script(
        "llamaindex_rag",
        [*llamaindex_argv(tiny_llama_4k_dir), "--no-huggingface", "--json", saved],
        monkeypatch,
    )
    res = json.loads(saved.read_text())
    assert res["questions"] == 3 and set(res["engines"]) == {"egtlm", "egtlm, no reuse"}
    assert all(len(e["latency_s"]) == 3 for e in res["engines"].values())
    assert "3 exact" in res["reuse"] and "0 misses" in res["reuse"]  # every paragraph's states reused


def test_llamaindex_rag_small(
    benchmarks: None, tiny_llama_4k_dir: Path, tiny_data: Path, tmp_path: Path, monkeypatch
):
    for module in ("llama_index.embeddings.huggingface", "llama_index.llms.huggingface"):
        pytest.importorskip(module, reason="llama-index's huggingface embedding/LLM packages not installed")
    out = tmp_path / "page"
    run_script("llamaindex_rag", [*llamaindex_argv(tiny_llama_4k_dir), "--out", out], monkeypatch)
    text = (out / "llamaindex_rag.md").read_text()
    assert "llama-index huggingface" in text and (out / "llamaindex_rag.png").stat().st_size


def test_teachers_small(
    benchmarks: None, tiny_model_dirs: dict, tiny_data: Path, tmp_path: Path, monkeypatch
):
    """Teachers may be local sentence-transformers folders: two tiny random models stand in for the
    packaged teachers (pip packages of real weights), alone and as an ensemble."""
    a, b = tiny_model_dirs["llama"], tiny_model_dirs["qwen2"]
    saved, page = tmp_path / "teachers.json", tmp_path / "teachers.md"
    argv = [
        "--teachers",
        a,
        b,
        "--cache",
        tmp_path / "cache",
        "--queries",
        2,
        "--docs",
        6,
        "--max-length",
        32,
    ]
    run_script(
        "teachers", [*argv, "--threads", 1, "--json", saved, "--write-page", "--out", page], monkeypatch
    )
    res = json.loads(saved.read_text())
    assert set(res["rows"]) == {str(a), str(b), f"{a} + {b}"} and res["scifact_queries"] == 2
    assert set(res["rows"][str(a)]) == {"stsb_dev", "scifact_train_ndcg@10", "scifact_train_recall@100"}
    assert page.read_text().startswith("# Distillation teachers: STS-B dev and SciFact train")


def test_serve_replicas_small(
    benchmarks: None, tiny_llama_dir: Path, tiny_data: Path, redis_url: str, tmp_path: Path, monkeypatch
):
    pytest.importorskip("ray.serve")
    out, url = tmp_path / "page", redis_url.rsplit("/", 1)[0] + "/5"  # a database of its own: flushed
    argv = ["--model", tiny_llama_dir, "--redis", url, "--clients", 2, "--seconds", 1, "--mixed-seconds", 1]
    assert run_script("serve_replicas", [*argv, "--cpus", 2, "--out", out], monkeypatch) == 0  # no errors
    record = json.loads((out / "serve_replicas.json").read_text())
    assert {(r[0], r[1]) for r in record["rows"]} >= {("1x embeddings", "embeddings"), ("2x mixed", "answer")}
    assert len(record["ratios"]["embeddings"]) == 2 and not record["errors"]


def test_ray_index_throughput_small(
    benchmarks: None, tiny_llama_dir: Path, tiny_data: Path, redis_url: str, tmp_path: Path, monkeypatch
):
    pytest.importorskip("ray")
    out = tmp_path / "page"
    argv = ["--model", tiny_llama_dir, "--redis", redis_url, "--docs", 8, "--batch-size", 4, "--cpus", 2]
    assert run_script("ray_index_throughput", [*argv, "--dtype", "float32", "--out", out], monkeypatch) == 0
    record = json.loads((out / "ray_index_throughput.json").read_text())
    assert record["entries"] == 8 + 1 and record["state_bytes"] > 0  # + the RAG head's states, stored once
    assert len(record["ratio_wall"]) == 2
    assert "## Projection" in (out / "ray_index_throughput.md").read_text()
