"""egtlm_sdpa: the decoding path against an independent attention formula and against eager models."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import AutoModelForCausalLM, DynamicCache
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from egtlm_core import EgtLM
from egtlm_core.modeling.kernels import NAME, egtlm_sdpa_forward, register


class _Attn(torch.nn.Module):
    def __init__(self, groups: int):
        super().__init__()
        self.num_key_value_groups = groups
        self.is_causal = True


def reference_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """softmax(q k^T * scale) v in float64, query head h reading KV head h // groups; [b, q, h, d]."""
    groups = q.shape[1] // k.shape[1]
    k = k.double().repeat_interleave(groups, dim=1)
    v = v.double().repeat_interleave(groups, dim=1)
    weights = torch.softmax(q.double() @ k.transpose(-1, -2) * scale, dim=-1)
    return (weights @ v).transpose(1, 2)


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
@pytest.mark.parametrize("kv_heads, groups, keys", [(3, 3, 650), (2, 2, 1), (4, 1, 37)])
def test_one_query_matches_the_formula(dtype, tol, kv_heads, groups, keys):
    torch.manual_seed(0)
    q = torch.randn(2, kv_heads * groups, 1, 64, dtype=dtype)
    k = torch.randn(2, kv_heads, keys, 64, dtype=dtype)
    v = torch.randn(2, kv_heads, keys, 64, dtype=dtype)
    out, _ = egtlm_sdpa_forward(_Attn(groups), q, k, v, None, scaling=1 / math.sqrt(64))
    assert out.shape == (2, 1, kv_heads * groups, 64)
    expected = reference_attention(q, k, v, 1 / math.sqrt(64))
    assert (out.double() - expected).abs().max() < tol


def test_other_shapes_are_transformers_sdpa_unchanged():
    torch.manual_seed(0)
    module = _Attn(2)
    q, k, v = torch.randn(1, 4, 5, 16), torch.randn(1, 2, 5, 16), torch.randn(1, 2, 5, 16)
    mask = torch.ones(1, 1, 5, 5, dtype=torch.bool).tril()
    for m, qq in ((None, q), (mask, q), (mask[..., -1:, :], q[:, :, -1:])):
        ours, _ = egtlm_sdpa_forward(module, qq, k, v, m, scaling=0.25)
        theirs, _ = sdpa_attention_forward(module, qq, k, v, m, scaling=0.25)
        assert torch.equal(ours, theirs)


def test_registry_models_run_it_and_decode_like_eager(tiny_llama_dir):
    register()
    ours = EgtLM(str(tiny_llama_dir), dtype="float32").model
    assert ours.config._attn_implementation == NAME
    eager = AutoModelForCausalLM.from_pretrained(
        tiny_llama_dir, dtype=torch.float32, attn_implementation="eager"
    )
    ids = torch.tensor([[5, 17, 3, 99, 42, 8, 61]])
    with torch.inference_mode():
        logits = {}
        for name, model in (("ours", ours), ("eager", eager)):
            out = model(ids[:, :-1], past_key_values=DynamicCache(config=model.config), use_cache=True)
            step = model(ids[:, -1:], past_key_values=out.past_key_values, use_cache=True)
            logits[name] = step.logits
    assert (logits["ours"] - logits["eager"]).abs().max() < 1e-5


def test_an_explicit_kernel_choice_is_kept(tiny_llama_dir):
    model = EgtLM(str(tiny_llama_dir), dtype="float32", attn_implementation="sdpa").model
    assert model.config._attn_implementation == "sdpa"


def test_egtlm_names_the_kernel_it_runs(tiny_llama_dir):
    """`EgtLM.attention_kernel` is the implementation the weights run, ours by default."""
    assert EgtLM(str(tiny_llama_dir), dtype="float32").attention_kernel == NAME
    eager = EgtLM(str(tiny_llama_dir), dtype="float32", attn_implementation="eager")
    assert eager.attention_kernel == eager.model.config._attn_implementation == "eager"
