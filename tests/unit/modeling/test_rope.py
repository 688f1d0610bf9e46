"""RoPE re-rotation (`modeling.rope`): exact against real models, and refused where it is not exact."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch

from egtlm_core import EgtLM
from egtlm_core.cache import MemoryTier
from egtlm_core.modeling.compat import cache_kwarg
from egtlm_core.modeling.rope import RopeInfo, rerotate_keys, rope_info, rotate_half

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tiny_models import build_tiny_model  # noqa: E402

DOC = "Paris is the capital of France. Berlin is the capital of Germany."
DOCS = [
    "The quick brown fox jumps over the lazy dog.",
    "A cat sat on the mat while the dog slept by the fire.",
]
DYNAMIC = {"rope_type": "dynamic", "factor": 2.0, "rope_theta": 10000.0}
QUESTION = "What is a fox?"


def load(directory: Path, **kwargs) -> EgtLM:
    return EgtLM(str(directory), torch_dtype="float32", cache_store=MemoryTier(), **kwargs)


def cache_keys(m: EgtLM, ids: list[int], start: int) -> list[torch.Tensor]:
    """Per-layer keys [kv_heads, seq, head_dim] of `ids` run alone at positions start..start+n-1."""
    input_ids = torch.tensor([ids])
    positions = torch.arange(start, start + len(ids))[None]
    with torch.inference_mode():
        out = m.model(
            input_ids=input_ids,
            attention_mask=torch.ones_like(input_ids),
            position_ids=positions,
            use_cache=True,
        )
    cache = out[cache_kwarg(m.model.forward)]
    return [layer.keys[0].clone() for layer in cache.layers]


def reference_rotation(x: torch.Tensor, delta: int, base: float) -> torch.Tensor:
    """Rotate each pair (x_i, x_{i+d/2}) by delta * base^(-2i/d), written out pair by pair."""
    d = x.shape[-1]
    out = torch.empty_like(x, dtype=torch.float64)
    xd = x.double()
    for i in range(d // 2):
        angle = delta * base ** (-2 * i / d)
        c, s = math.cos(angle), math.sin(angle)
        a, b = xd[..., i], xd[..., i + d // 2]
        out[..., i] = a * c - b * s
        out[..., i + d // 2] = b * c + a * s
    return out


# --- exactness against the model -------------------------------------------------------------------
@pytest.mark.parametrize("arch", ["llama", "qwen2", "mistral"])
def test_rerotated_keys_equal_keys_computed_at_the_new_offset(tiny_model_dirs, arch):
    m = load(tiny_model_dirs[arch])
    info = rope_info(m.model)
    assert info.reuse_problem(512) is None
    ids = m.tokenizer(DOC)["input_ids"]
    at_zero = cache_keys(m, ids, 0)
    for offset in (1, 37, 300):
        want = cache_keys(m, ids, offset)
        for layer, (k0, kp) in enumerate(zip(at_zero, want, strict=True)):
            moved = rerotate_keys(k0, offset, info.inv_freq)
            assert moved.dtype == torch.float32 and moved.shape == kp.shape
            err = (moved - kp).abs().max().item()
            assert err <= 1e-5, f"{arch} layer {layer} offset {offset}: {err}"
            # and the keys really did change with the position (the test is not vacuous)
            assert (k0 - kp).abs().max().item() > 1e-3
        # moving back is exact too
        back = rerotate_keys(want[0], -offset, info.inv_freq)
        assert (back - at_zero[0]).abs().max().item() <= 1e-5


def test_inv_freq_is_base_to_the_minus_2i_over_d(tiny_llama_dir):
    m = load(tiny_llama_dir)
    info = rope_info(m.model)
    config = m.model.config
    d = config.hidden_size // config.num_attention_heads
    base = config.rope_parameters["rope_theta"]
    want = torch.tensor([base ** (-2 * i / d) for i in range(d // 2)], dtype=torch.float32)
    torch.testing.assert_close(info.inv_freq, want, rtol=1e-6, atol=0)
    assert info.rope_type == "default" and info.sliding_window is None


# --- the formula -----------------------------------------------------------------------------------
def test_rotate_half_is_the_hf_half_split_layout():
    x = torch.arange(8, dtype=torch.float32).reshape(1, 8) + 1
    assert rotate_half(x).tolist() == [[-5.0, -6.0, -7.0, -8.0, 1.0, 2.0, 3.0, 4.0]]
    y = torch.randn(2, 3, 5, 16)
    r = rotate_half(y)
    assert torch.equal(r[..., :8], -y[..., 8:]) and torch.equal(r[..., 8:], y[..., :8])
    assert torch.equal(rotate_half(rotate_half(y)), -y)  # a quarter turn twice is a half turn


@pytest.mark.parametrize("delta", [1, 7, -3, 1000])
def test_rerotate_keys_matches_an_independent_pairwise_rotation(delta):
    g = torch.Generator().manual_seed(delta % 97)
    d, base = 16, 10000.0
    keys = torch.randn(2, 5, d, generator=g)
    inv_freq = torch.tensor([base ** (-2 * i / d) for i in range(d // 2)])
    got = rerotate_keys(keys, delta, inv_freq)
    want = reference_rotation(keys, delta, base)
    assert (got.double() - want).abs().max().item() <= 1e-4 * max(1.0, abs(delta) / 100)
    # rotations preserve the norm of each pair
    torch.testing.assert_close(got.norm(dim=-1), keys.norm(dim=-1), rtol=1e-5, atol=1e-5)


def test_rerotate_keys_composes_and_never_aliases_its_input():
    g = torch.Generator().manual_seed(0)
    keys = torch.randn(2, 4, 8, generator=g)
    before = keys.clone()
    inv_freq = torch.tensor([10000.0 ** (-2 * i / 8) for i in range(4)])
    torch.testing.assert_close(
        rerotate_keys(rerotate_keys(keys, 5, inv_freq), 11, inv_freq),
        rerotate_keys(keys, 16, inv_freq),
        rtol=0,
        atol=1e-5,
    )
    same = rerotate_keys(keys, 0, inv_freq)
    assert torch.equal(same, keys) and same.data_ptr() != keys.data_ptr()
    assert torch.equal(keys, before)
    half = rerotate_keys(keys.to(torch.bfloat16), 3, inv_freq)
    assert half.dtype == torch.bfloat16
    assert (half.float() - rerotate_keys(keys, 3, inv_freq)).abs().max().item() < 0.05


# --- where re-rotation is refused ------------------------------------------------------------------
def test_reuse_problem_refuses_length_dependent_rope_and_short_windows():
    inv = torch.ones(4)
    assert RopeInfo(inv, "default", "f", None).reuse_problem(10_000) is None
    assert RopeInfo(inv, "linear", "f", None).reuse_problem(10_000) is None
    for kind in ("dynamic", "longrope"):
        problem = RopeInfo(inv, kind, "f", None).reuse_problem(8)
        assert problem and kind in problem
    windowed = RopeInfo(inv, "default", "f", 16)
    assert windowed.reuse_problem(16) is None
    assert "16" in (windowed.reuse_problem(17) or "")


def test_rope_info_reads_rope_type_and_sliding_window(tiny_model_dirs, tmp_path):
    assert rope_info(load(tiny_model_dirs["qwen2"]).model).sliding_window is None  # full attention layers
    windowed = build_tiny_model(tmp_path / "mistral_w16", "mistral", sliding_window=16)
    info = rope_info(load(windowed).model)
    assert info.sliding_window == 16 and info.reuse_problem(17)
    dynamic = build_tiny_model(tmp_path / "llama_dyn", "llama", rope_parameters=DYNAMIC)
    info = rope_info(load(dynamic).model)
    assert info.rope_type == "dynamic" and info.reuse_problem(4)
    assert info.fingerprint != rope_info(load(tiny_model_dirs["llama"]).model).fingerprint


@pytest.mark.parametrize("kind", ["sliding_window", "dynamic"])
def test_answer_falls_back_to_full_prefill_when_reuse_is_not_exact(tmp_path, kind):
    if kind == "sliding_window":
        directory = build_tiny_model(tmp_path / "m", "mistral", sliding_window=16)
    else:
        directory = build_tiny_model(tmp_path / "m", "llama", rope_parameters=DYNAMIC)
    m = load(directory)
    reused = m.answer(QUESTION, DOCS, max_new_tokens=6)
    full = m.answer(QUESTION, DOCS, max_new_tokens=6, reuse_cache=False)
    assert reused.reuse is not None and reused.reuse.fallback
    assert reused.reused_tokens == 0
    assert reused.prefilled_tokens == len(m._rag.plan(QUESTION, DOCS).token_ids)
    assert reused.text == full.text
