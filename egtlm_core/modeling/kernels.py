"""The attention kernel egtlm runs on: transformers' SDPA, minus one slow CPU path.

For a single query token (every decoding step) with grouped-query attention and no mask,
transformers calls `scaled_dot_product_attention(..., enable_gqa=True)`. That choice is right on
CUDA, but torch's CPU kernel is ~7x slower with `enable_gqa` than on the query heads packed per
key/value head (bf16, 9 query / 3 KV heads, 650 keys: 486 us vs 69 us a layer), which made
attention a third of SmolLM2's decoding time. `egtlm_sdpa` packs the heads there and hands every
other case to transformers' own `sdpa_attention_forward` unchanged. It is registered under its own
name (never by replacing "sdpa"), so other models in the same process are not touched.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

NAME = "egtlm_sdpa"


def egtlm_sdpa_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """SDPA attention; one-token CPU queries over grouped KV heads go through packed heads."""
    groups = getattr(module, "num_key_value_groups", 1)
    if (
        query.device.type == "cpu"
        and query.shape[2] == 1
        and groups > 1
        and attention_mask is None
        and kwargs.get("position_bias") is None
        and kwargs.get("softcap") is None
        and not kwargs.get("dropout")
    ):
        batch, heads, _, dim = query.shape
        packed = query.reshape(batch, heads // groups, groups, dim)  # heads h*g..h*g+g-1 share KV head h
        out = torch.nn.functional.scaled_dot_product_attention(packed, key, value, scale=scaling)
        return out.reshape(batch, heads, 1, value.shape[-1]).transpose(1, 2).contiguous(), None
    return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, **kwargs)


def register() -> str:
    """Make `attn_implementation="egtlm_sdpa"` known to transformers (idempotent); returns the name."""
    if NAME not in AttentionInterface._global_mapping:
        AttentionInterface.register(NAME, egtlm_sdpa_forward)
        AttentionMaskInterface.register(NAME, sdpa_mask)
    return NAME


def use_egtlm_kernel(model: Any) -> None:
    """Switch a model that runs transformers' SDPA to `egtlm_sdpa`; any other choice is left alone."""
    config = getattr(model, "config", None)
    if getattr(config, "_attn_implementation", None) == "sdpa" and hasattr(model, "set_attn_implementation"):
        model.set_attn_implementation(register())


def attention_kernel(model: Any) -> str:
    """The attention implementation a model runs (part of cache keys: kernels round differently)."""
    return str(getattr(model.config, "_attn_implementation", None) or "default")
