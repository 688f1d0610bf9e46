"""Weight-only int8 (`EgtLM(weights="int8")`): the layer against an independent formula, and the
model: its own registry entry, embeddings and greedy chat close to native, cache keys of their own."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from egtlm_core import EgtLM
from egtlm_core.modeling.int8_weights import Int8Linear, quantize_linears


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_int8_linear_equals_the_dequantized_product(dtype):
    torch.manual_seed(0)
    linear = torch.nn.Linear(48, 20, bias=True).to(dtype)
    x = torch.randn(2, 3, 48, dtype=dtype)
    # reference, written here: per output row, scale = max |w| / 127, q = round(w / scale) in [-127, 127]
    w = linear.weight.detach().float()
    scale = w.abs().max(dim=1, keepdim=True).values / 127
    dequantized = torch.clamp(torch.round(w / scale), -127, 127) * scale
    want = x.float() @ dequantized.T + linear.bias.detach().float()
    got = Int8Linear(linear)(x)
    assert got.shape == (2, 3, 20) and got.dtype == dtype
    tol = 1e-4 if dtype == torch.float32 else 0.1
    torch.testing.assert_close(got.float(), want, atol=tol, rtol=tol * 0.1)
    assert (dequantized - w).abs().max() <= scale.max() / 2 + 1e-6  # rounding error of one step at most


def test_quantize_linears_swaps_every_linear_and_refuses_other_devices():
    model = torch.nn.Sequential(
        torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Sequential(torch.nn.Linear(8, 4))
    )
    assert quantize_linears(model) == 2
    assert not any(isinstance(m, torch.nn.Linear) for m in model.modules())
    with pytest.raises(ValueError, match="runs on CPU"):
        quantize_linears(torch.nn.Linear(8, 8, device="meta"))
    with pytest.raises(ValueError, match="Unknown weights 'int4'"):
        EgtLM(weights="int4")


@pytest.fixture(scope="module")
def native_and_int8(tiny_llama_dir):
    native = EgtLM(str(tiny_llama_dir), torch_dtype="float32")
    return native, EgtLM(str(tiny_llama_dir), torch_dtype="float32", weights="int8")


def test_int8_weights_are_their_own_entry_and_embed_close_to_native(native_and_int8):
    native, int8 = native_and_int8
    assert int8.weights == "int8" and native.weights == "native" and "weights='int8'" in repr(int8)
    assert int8._loaded is not native._loaded  # never the same weights object
    assert not any(isinstance(m, torch.nn.Linear) for m in int8.model.modules())
    texts = ["Paris is the capital of France.", "A cat sat on the mat.", "Numbers like 12345."]
    a, b = native.encode(texts), int8.encode(texts)
    assert np.all((a * b).sum(1) > 0.98)  # per-row int8 keeps each vector's direction


def test_int8_weights_chat_and_keep_their_own_cache_keys(native_and_int8):
    native, int8 = native_and_int8
    messages = [{"role": "user", "content": "Say hello."}]
    assert int8.chat(messages, max_new_tokens=4, temperature=0.0).completion_tokens == 4
    assert int8._loaded.fingerprint() == native._loaded.fingerprint() + "+int8"
    doc = ["The river runs past the station below the mountain."]
    native.index(doc)
    int8.index(doc)
    (n,), (q,) = native.document_cache.hand_out(doc), int8.document_cache.hand_out(doc)
    assert n.key.model != q.key.model and n.stored and q.stored


def test_many_rows_take_the_dequantized_product_with_the_same_result():
    """Prefill and embedding batches (more than KERNEL_ROWS rows) dequantize; decoding uses the kernel."""
    from egtlm_core.modeling.int8_weights import KERNEL_ROWS

    torch.manual_seed(0)
    layer = Int8Linear(torch.nn.Linear(32, 16))
    x = torch.randn(KERNEL_ROWS * 4, 32)
    one_by_one = torch.cat([layer(row[None]) for row in x])  # each row through the int8 kernel
    torch.testing.assert_close(layer(x), one_by_one, atol=1e-4, rtol=1e-4)
