"""The GPU path (`device="cuda"`), on a tiny random model: runs where CUDA is present, skips elsewhere.

CPU float32 is the reference: encode within 1e-3, the same greedy chat, reuse of an exact first
document slot equal to a full prefill, and the SDPA kernel taking the embedding mask as eager does.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from egtlm_core import EgtLM

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

TEXTS = ["Paris is the capital of France.", "The quick brown fox jumps over the lazy dog.", "A cat."]
DOCS = ["The Eiffel Tower is 330 metres tall and stands in Paris.", "Berlin is the capital of Germany."]
CHAT = [{"role": "user", "content": "What is the capital of France?"}]


def _pair(path, **kwargs) -> tuple[EgtLM, EgtLM]:
    cpu = EgtLM(str(path), device="cpu", torch_dtype="float32", share_weights=False, **kwargs)
    gpu = EgtLM(str(path), device="cuda", torch_dtype="float32", share_weights=False, **kwargs)
    return cpu, gpu


@pytest.mark.parametrize("attention", ["causal", "bidirectional"])
def test_encode_on_gpu_equals_cpu(tiny_llama_dir, attention) -> None:
    cpu, gpu = _pair(tiny_llama_dir, attention=attention)
    np.testing.assert_allclose(gpu.encode(TEXTS), cpu.encode(TEXTS), atol=1e-3)
    np.testing.assert_allclose(gpu.encode_queries(TEXTS), cpu.encode_queries(TEXTS), atol=1e-3)


def test_sdpa_kernel_takes_the_embedding_mask(tiny_llama_dir) -> None:
    eager = EgtLM(str(tiny_llama_dir), device="cuda", torch_dtype="float32", attention="bidirectional")
    sdpa = EgtLM(
        str(tiny_llama_dir), device="cuda", torch_dtype="float32", attention="bidirectional",
        attn_implementation="sdpa", share_weights=False,
    )  # fmt: skip
    np.testing.assert_allclose(sdpa.encode(TEXTS), eager.encode(TEXTS), atol=1e-3)


def test_chat_on_gpu_is_the_cpu_greedy_answer(tiny_llama_dir) -> None:
    cpu, gpu = _pair(tiny_llama_dir)
    assert gpu.chat(CHAT, max_new_tokens=12).text == cpu.chat(CHAT, max_new_tokens=12).text
    assert "".join(gpu.stream_chat(CHAT, max_new_tokens=12)) == gpu.chat(CHAT, max_new_tokens=12).text


def test_reuse_of_an_exact_first_slot_equals_a_full_prefill_on_gpu(tiny_llama_dir) -> None:
    gpu = EgtLM(str(tiny_llama_dir), device="cuda", torch_dtype="float32", share_weights=False)
    gpu.index(DOCS[:1])
    reused = gpu.answer("How tall is the tower?", k=1, max_new_tokens=8)
    full = gpu.answer("How tall is the tower?", k=1, max_new_tokens=8, reuse_cache=False)
    assert reused.reused_tokens > 0 and reused.text == full.text
