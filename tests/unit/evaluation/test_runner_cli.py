from __future__ import annotations

import argparse
import json

import pytest

from egtlm_core import EgtLM
from egtlm_core.cli import evaluate as eval_cli
from egtlm_core.evaluation import EvalOptions, evaluate_sts, read_stsb, run_eval
from egtlm_core.evaluation.runner import expand_tasks


def test_expand_tasks():
    assert expand_tasks("retrieval") == ["scifact", "xquad"]
    assert expand_tasks(["sts", "retrieval", "xquad"]) == ["sts", "scifact", "xquad"]
    with pytest.raises(ValueError, match=r"Unknown task 'nli'; expected one of \('sts'"):
        expand_tasks(["nli"])


def test_options_validated():
    with pytest.raises(ValueError, match="sts_sides"):
        EvalOptions(sts_sides=("left",))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="limit"):
        EvalOptions(limit=0)


@pytest.fixture(scope="module")
def tiny(tiny_llama_dir):
    return EgtLM(str(tiny_llama_dir), torch_dtype="float32")


def test_run_eval_all_tasks_on_tiny_data(tiny, data_root):
    seen = []
    out = run_eval(
        tiny,
        "all",
        data_dir=data_root,
        max_new_tokens=3,
        sts_sides=("document", "plain"),
        on_result=lambda t, r: seen.append(t),
    )
    assert seen == ["sts", "zh_sts", "scifact", "xquad", "rag"] == list(out["tasks"])
    sts = out["tasks"]["sts"]
    assert sts["spearman"] == sts["spearman_document"]
    assert sts["spearman"] == pytest.approx(evaluate_sts(tiny, read_stsb("test", root=data_root))["spearman"])
    assert sts["spearman_plain"] == pytest.approx(
        evaluate_sts(tiny, read_stsb("test", root=data_root), side="plain")["spearman"]
    )
    assert out["tasks"]["scifact"]["queries"] == 2 and out["tasks"]["xquad"]["documents"] == 2
    assert out["tasks"]["rag"]["questions"] == 3 and 0 <= out["tasks"]["rag"]["match"] <= 100
    assert out["options"]["sts_sides"] == ("document", "plain")


def test_run_eval_dev_split_and_limit(tiny, data_root):
    out = run_eval(tiny, ["sts"], EvalOptions(split="dev", limit=2, data_dir=data_root))
    assert out["tasks"]["sts"]["pairs"] == 2
    with pytest.raises(ValueError, match=r"Unknown split 'dev'; expected one of \('train', 'test'\)"):
        run_eval(tiny, ["scifact"], split="dev", data_dir=data_root)


def parse(argv):
    parser = argparse.ArgumentParser(prog="egtlm")
    sub = parser.add_subparsers(dest="command", required=True)
    shared = argparse.ArgumentParser(add_help=False)
    shared.add_argument("--model")  # the shared model option other commands take; eval drops it
    eval_cli.register(sub, [shared])
    return parser.parse_args(argv)


def test_cli_table_and_json(tiny_llama_dir, data_root, tmp_path, capsys):
    out = tmp_path / "r.json"
    args = parse(
        [
            "eval",
            str(tiny_llama_dir),
            "--task",
            "sts",
            "--task",
            "xquad",
            "--data-dir",
            str(data_root),
            "--dtype",
            "float32",
            "--json",
            str(out),
            "--limit",
            "3",
        ]
    )
    assert eval_cli.cmd_eval(args) == 0
    printed = capsys.readouterr().out
    saved = json.loads(out.read_text())
    assert list(saved["tasks"]) == ["sts", "xquad"] and saved["dtype"] == "float32"
    row = next(line for line in printed.splitlines() if line.startswith("| sts |"))
    assert f"{saved['tasks']['sts']['spearman']:.3f}" in row and "| 3 |" in row
    assert f"{saved['tasks']['xquad']['recall@5']:.3f}" in printed


def test_cli_rejects_bad_input(tmp_path):
    with pytest.raises(SystemExit):
        parse(["eval", "default", "--task", "nli"])
    with pytest.raises(SystemExit):
        parse(["eval", "default", "--task", "sts", "--limit", "0"])
    args = parse(["eval", "default", "--task", "sts", "--json", str(tmp_path / "no" / "r.json")])
    with pytest.raises(ValueError, match="does not exist"):
        eval_cli.cmd_eval(args)


def test_egtlm_main_runs_eval(tiny_llama_dir, data_root, tmp_path, capsys):
    from egtlm_core.cli.main import main

    argv = [
        "eval",
        str(tiny_llama_dir),
        "--task",
        "zh_sts",
        "--data-dir",
        str(data_root),
        "--dtype",
        "float32",
    ]
    assert main(argv) == 0
    assert "| zh_sts | Chinese STS-B Spearman |" in capsys.readouterr().out
    assert main([*argv[:4], "--data-dir", str(tmp_path / "nowhere")]) == 2
    assert "EGTLM_DATA_DIR" in capsys.readouterr().err
