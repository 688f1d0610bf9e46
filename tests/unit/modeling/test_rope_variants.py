"""RoPE variants re-rotation cannot move keys for: each is named, and the RAG path prefills in full
with that reason (never a shape error, never silently wrong keys). Tiny random models of each kind."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import transformers

from egtlm_core import EgtLM
from egtlm_core.cache import MemoryTier
from egtlm_core.modeling.rope import RopeInfo, rerotate_keys, rope_info

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tiny_models import build_tokenizer  # noqa: E402

DOCS = [
    "The quick brown fox jumps over the lazy dog.",
    "A cat sat on the mat while the dog slept by the fire.",
]
QUESTION = "What is a fox?"
ROPE = {"rope_type": "default", "rope_theta": 10000.0}

# kind -> (config class, model class, settings over the common tiny ones, words the reason names)
VARIANTS = {
    "no_rope_layers": ("SmolLM3Config", "SmolLM3ForCausalLM", {}, "no_rope_layers"),
    "partial_phi": (
        "PhiConfig",
        "PhiForCausalLM",
        {"num_key_value_heads": None, "rope_parameters": {**ROPE, "partial_rotary_factor": 0.5}},
        "partial rotary",
    ),
    "partial_stablelm": (
        "StableLmConfig",
        "StableLmForCausalLM",
        {"rope_parameters": {**ROPE, "partial_rotary_factor": 0.25}},
        "partial rotary",
    ),
    "partial_gpt_neox": (
        "GPTNeoXConfig",
        "GPTNeoXForCausalLM",
        {"num_key_value_heads": None, "rope_parameters": {**ROPE, "partial_rotary_factor": 0.25}},
        "partial rotary",
    ),
    "local_global": (
        "Gemma3TextConfig",
        "Gemma3ForCausalLM",
        {"head_dim": 16, "sliding_window": 512, "layer_types": ["sliding_attention", "full_attention"] * 2},
        "several RoPE rotations",
    ),
    "no_rope": (
        "GPT2Config",
        "GPT2LMHeadModel",
        {"n_embd": 64, "n_layer": 2, "n_head": 4, "n_positions": 512},
        "no rotary position embedding",
    ),
}
_COMMON = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 512,
}


def build_variant(directory: Path, kind: str) -> Path:
    """Save a random tiny model of `kind` with the tests' byte-level BPE tokenizer."""
    config_name, model_name, overrides, _ = VARIANTS[kind]
    tokenizer = build_tokenizer()
    settings = {} if kind == "no_rope" else dict(_COMMON)
    settings.update(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
        **overrides,
    )
    settings = {k: v for k, v in settings.items() if v is not None}
    torch.manual_seed(0)
    model = getattr(transformers, model_name)(getattr(transformers, config_name)(**settings))
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def variant_dirs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("rope_variants")
    return {kind: build_variant(root / kind, kind) for kind in VARIANTS}


def load(directory: Path) -> EgtLM:
    return EgtLM(str(directory), torch_dtype="float32", cache_store=MemoryTier())


@pytest.mark.parametrize("kind", list(VARIANTS))
def test_each_variant_has_a_reuse_problem_that_names_it(variant_dirs, kind):
    m = load(variant_dirs[kind])
    info = rope_info(m.model)
    problem = info.reuse_problem(64)
    assert problem is not None and VARIANTS[kind][3] in problem
    assert info.unsupported == problem and info.fingerprint.startswith("unsupported:")


def test_the_variants_are_what_they_claim(variant_dirs):
    """The tiny configs really have the property (so the tests above are not vacuous)."""
    configs = {kind: load(d).model.config for kind, d in variant_dirs.items()}
    assert 0 in configs["no_rope_layers"].no_rope_layers
    for kind in ("partial_phi", "partial_stablelm", "partial_gpt_neox"):
        assert configs[kind].rope_parameters["partial_rotary_factor"] < 1
    assert set(configs["local_global"].rope_parameters) == {"sliding_attention", "full_attention"}
    assert not hasattr(load(variant_dirs["no_rope"]).model.base_model, "rotary_emb")


@pytest.mark.parametrize("kind", list(VARIANTS))
def test_answer_falls_back_to_full_prefill_with_the_reason(variant_dirs, kind):
    m = load(variant_dirs[kind])
    reused = m.answer(QUESTION, documents=DOCS, max_new_tokens=6)
    full = m.answer(QUESTION, documents=DOCS, max_new_tokens=6, reuse_cache=False)
    assert reused.reuse is not None and VARIANTS[kind][3] in (reused.reuse.fallback or "")
    assert reused.reused_tokens == 0 and reused.text == full.text


def test_rerotate_keys_refuses_frequencies_that_do_not_cover_the_head():
    keys = torch.randn(2, 5, 16)
    with pytest.raises(ValueError, match="head_dim 16 with 4 RoPE frequencies"):
        rerotate_keys(keys, 3, torch.ones(4))  # partial rotary's inv_freq would broadcast wrongly
    with pytest.raises(ValueError, match="with 1 RoPE"):
        rerotate_keys(keys, 3, torch.ones(1))  # a single frequency would broadcast silently


def test_unknown_rope_types_are_refused():
    inv = torch.ones(4)
    assert "not known" in (RopeInfo(inv, "proportional", "f", None).reuse_problem(8) or "")
    for static in ("default", "linear", "llama3", "yarn"):
        assert RopeInfo(inv, static, "f", None).reuse_problem(8) is None
