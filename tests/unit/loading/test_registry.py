"""One copy of the weights per (source, dtype, device), shared by every EgtLM that asks for it."""

from __future__ import annotations

import gc
import threading
import weakref

import numpy as np
import pytest
import torch
from tiny_models import build_tiny_model

from egtlm_core import EgtLM
from egtlm_core.loading.registry import loaded_models


@pytest.fixture
def fresh_dir(tmp_path):
    """A model directory no other test has loaded, so the registry starts empty for it."""
    return build_tiny_model(tmp_path / "llama", "llama", seed=1)


def test_same_weights_are_shared(fresh_dir):
    m1 = EgtLM(str(fresh_dir), torch_dtype="float32")
    m2 = EgtLM(str(fresh_dir), torch_dtype="float32", pooling="last", attention="causal", padding_side="left")
    assert m1.model is m2.model
    assert m1.tokenizer is m2.tokenizer
    assert m1._loaded is m2._loaded
    # Settings stay per instance.
    assert (m1.config.pooling, m2.config.pooling) == ("weightedmean", "last")
    assert np.abs(m1.encode("fox") - m2.encode("fox")).max() > 1e-3


def test_embedding_entry_is_upgraded_in_place(fresh_dir):
    emb = EgtLM(str(fresh_dir), mode="embedding", torch_dtype="float32")
    assert not hasattr(emb.model, "lm_head")
    entry = emb._loaded
    assert entry.has_lm_head is False
    before = emb.encode(["a cat sat on the mat", "fox"])

    uni = EgtLM(str(fresh_dir), mode="unified", torch_dtype="float32")
    assert uni._loaded is entry and entry.has_lm_head is True  # the same entry, upgraded
    assert hasattr(uni.model, "lm_head")
    assert emb.model is uni.model.base_model  # the embedder now runs the unified model's body
    assert not hasattr(emb.model, "lm_head")
    np.testing.assert_allclose(emb.encode(["a cat sat on the mat", "fox"]), before, atol=1e-6)
    np.testing.assert_allclose(uni.encode(["a cat sat on the mat", "fox"]), before, atol=1e-6)
    with pytest.raises(RuntimeError, match="embedding"):
        emb.chat("hi")
    assert uni.chat("hi", max_new_tokens=3).completion_tokens >= 1

    # Another embedder now gets the unified entry straight away: no second load.
    emb2 = EgtLM(str(fresh_dir), mode="embedding", torch_dtype="float32")
    assert emb2._loaded is entry and emb2.model is uni.model.base_model


def test_unified_then_embedding_shares(fresh_dir):
    uni = EgtLM(str(fresh_dir), torch_dtype="float32")
    lm = uni.model
    emb = EgtLM(str(fresh_dir), mode="embedding", torch_dtype="float32")
    gen = EgtLM(str(fresh_dir), mode="generative", torch_dtype="float32")
    assert emb._loaded is uni._loaded is gen._loaded
    assert uni.model is lm and gen.model is lm and hasattr(lm, "lm_head")  # nothing reloaded or replaced
    assert emb.model is lm.base_model and not hasattr(emb.model, "lm_head")


def test_different_dtype_is_a_different_copy(fresh_dir):
    fp32 = EgtLM(str(fresh_dir), torch_dtype="float32")
    bf16 = EgtLM(str(fresh_dir), torch_dtype="bfloat16")
    assert fp32.model is not bf16.model
    assert fp32.dtype == torch.float32 and bf16.dtype == torch.bfloat16
    assert next(bf16.model.parameters()).dtype == torch.bfloat16
    assert next(fp32.model.parameters()).dtype == torch.float32
    # "fp32" and torch.float32 name the same entry.
    assert EgtLM(str(fresh_dir), torch_dtype="fp32").model is fp32.model
    assert EgtLM(str(fresh_dir), dtype=torch.float32).model is fp32.model


def test_different_directories_are_different_copies(fresh_dir, tiny_llama_dir):
    a = EgtLM(str(fresh_dir), torch_dtype="float32")
    b = EgtLM(str(tiny_llama_dir), torch_dtype="float32")
    assert a.model is not b.model
    assert np.abs(a.encode("fox") - b.encode("fox")).max() > 1e-3  # seeds 1 and 0


def test_concurrent_constructions_load_once(fresh_dir):
    made: list[EgtLM] = []
    lock = threading.Lock()

    def build() -> None:
        m = EgtLM(str(fresh_dir), torch_dtype="float32")
        with lock:
            made.append(m)

    threads = [threading.Thread(target=build) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(made) == 6
    assert all(m.model is made[0].model for m in made)


def test_weights_are_freed_when_unused(fresh_dir):
    m = EgtLM(str(fresh_dir), torch_dtype="float32")
    entry = weakref.ref(m._loaded)
    assert any(e is entry() for e in loaded_models())
    del m
    gc.collect()
    assert entry() is None
