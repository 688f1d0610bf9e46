"""A trained adapter in the package becomes what `EgtLM()` loads; the base stays available by name."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from egtlm_core import EgtLM
from egtlm_core.loading import sources
from egtlm_core.loading.sources import BASE_MODEL_NAMES, DEFAULT_BASE, SETTINGS_FILE, resolve_source

peft = pytest.importorskip("peft")


@pytest.fixture
def packaged(tmp_path: Path, tiny_llama_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The tiny model as "the default", and a LoRA on it saved the way `egtlm train` saves one."""
    from transformers import AutoModelForCausalLM

    monkeypatch.setattr(sources, "ensure_default_model", lambda cache_dir=None: tiny_llama_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32)
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    adapter = tmp_path / "adapters" / "smollm2-grit"
    peft.get_peft_model(model, config).save_pretrained(adapter)
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    (adapter / "adapter_config.json").write_text(json.dumps({**cfg, "base_model_name_or_path": DEFAULT_BASE}))
    (adapter / SETTINGS_FILE).write_text(json.dumps({"pooling": "mean", "trained_with": {"max_steps": 1}}))
    monkeypatch.setattr(sources, "PACKAGED_ADAPTER", adapter)
    return adapter


def test_the_default_applies_the_packaged_adapter_and_its_settings(packaged: Path, tiny_llama_dir: Path):
    source = resolve_source(None)
    assert source.kind == "peft" and Path(source.path) == packaged
    assert source.base is not None and Path(source.base.path) == tiny_llama_dir
    trained = EgtLM(torch_dtype="float32")
    assert trained.config.pooling == "mean"  # from egtlm_config.json
    base = EgtLM(BASE_MODEL_NAMES[0], torch_dtype="float32")
    assert base.source.kind == "default" and base.config.pooling == "weightedmean"
    texts = ["Paris is the capital of France.", "A cat sat on the mat."]
    assert not np.allclose(trained.encode(texts), base.encode(texts))
    assert EgtLM(pooling="last", torch_dtype="float32").config.pooling == "last"  # arguments win


def test_an_adapter_on_the_default_base_loads_from_its_folder(packaged: Path):
    direct = EgtLM(str(packaged), torch_dtype="float32")
    assert direct.source.base is not None and direct.source.base.kind == "default"
    via_default = EgtLM(torch_dtype="float32")
    np.testing.assert_allclose(direct.encode("a fox"), via_default.encode("a fox"), atol=1e-6)


def test_the_base_default_by_environment(packaged: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("EGTLM_BASE_DEFAULT", "1")
    assert resolve_source(None).kind == "default"


def test_a_merged_adapter_is_kept_and_a_damaged_copy_is_merged_again(
    packaged: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
):
    """The first load merges with peft and keeps the result; the next reads it without peft and
    computes the same; a truncated copy is dropped with a warning and merged again, never served."""
    from egtlm_core.loading.loader import MERGED_MARKER, load_model_and_tokenizer

    monkeypatch.setenv("EGTLM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("EGTLM_MERGED_CACHE", "1")  # on, as outside the tests
    source = resolve_source(str(packaged))
    ids = torch.tensor([[1, 5, 9, 14, 3]])

    def load(with_lm_head: bool = True) -> torch.Tensor:
        model, _ = load_model_and_tokenizer(
            source, with_lm_head=with_lm_head, dtype=torch.float32, device="cpu"
        )
        with torch.inference_mode():
            out = model(input_ids=ids)
        return out.logits if with_lm_head else out.last_hidden_state

    merged_by_peft, body_by_peft = load(), load(with_lm_head=False)
    (folder,) = (tmp_path / "cache" / "merged").iterdir()
    assert (folder / MERGED_MARKER).is_file() and folder.name.endswith("-float32")
    with monkeypatch.context() as m:
        m.setattr(peft.PeftModel, "from_pretrained", lambda *a, **k: pytest.fail("peft ran again"))
        torch.testing.assert_close(load(), merged_by_peft, rtol=0, atol=1e-6)
        torch.testing.assert_close(load(with_lm_head=False), body_by_peft, rtol=0, atol=1e-6)
    weights = next(folder.glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:100])  # a copy cut short (a full disk, a killed write)
    with caplog.at_level("WARNING"):
        torch.testing.assert_close(load(), merged_by_peft, rtol=0, atol=1e-6)
    assert "damaged" in caplog.text and (folder / MERGED_MARKER).is_file()  # merged and kept again
    monkeypatch.setenv("EGTLM_MERGED_CACHE", "0")
    monkeypatch.setenv("EGTLM_CACHE_DIR", str(tmp_path / "other"))
    torch.testing.assert_close(load(), merged_by_peft, rtol=0, atol=1e-6)
    assert not (tmp_path / "other" / "merged").exists()
