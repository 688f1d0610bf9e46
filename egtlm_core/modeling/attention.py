"""The bidirectional/causal switch for the embedding pass, without touching shared state.

GritLM patches the modeling file with an `is_causal` kwarg, which breaks on other architectures, and
flipping `config.is_causal` races with a generation running in another thread. Instead the embedding
pass hands the model a ready 4D additive mask: transformers passes a 4D mask through unchanged
(Llama, Qwen2, Mistral and the other `create_causal_mask` models), so the attention pattern is ours
and generation, which never sees this mask, stays causal.
"""

from __future__ import annotations

import torch

# Kernels that take an arbitrary additive 4D mask; flash-attention kernels only take a padding mask.
MASKABLE_ATTENTION = ("eager", "sdpa", "egtlm_sdpa", "flex_attention")


def check_maskable(attn_implementation: str | None) -> None:
    """Refuse attention kernels that ignore a custom 4D mask (it would silently be causal)."""
    if attn_implementation not in (None, *MASKABLE_ATTENTION):
        raise ValueError(
            f"Embedding with attn_implementation={attn_implementation!r} cannot take a custom attention "
            f"mask; load the model with one of {MASKABLE_ATTENTION} (e.g. attn_implementation='sdpa')."
        )


def embedding_attention_mask(
    attention_mask: torch.Tensor, causal: bool, dtype: torch.dtype, sliding_window: int | None = None
) -> torch.Tensor:
    """[batch, seq] padding mask -> [batch, 1, seq, seq] additive mask (0 = attend, min = blocked).

    Every query attends to all real keys (bidirectional) or to the real keys at or before it (causal).
    With `sliding_window`, only to keys that near, by transformers' rules for sliding-window layers
    (causal: q - k < window; bidirectional: |q - k| <= window); real tokens are contiguous in a row,
    so column distance is position distance for left and right padding alike.
    """
    batch, seq = attention_mask.shape
    allowed = attention_mask.bool()[:, None, None, :].expand(batch, 1, seq, seq)
    if causal:
        allowed = allowed & torch.ones(seq, seq, dtype=torch.bool, device=attention_mask.device).tril()
    if sliding_window is not None:
        idx = torch.arange(seq, device=attention_mask.device)
        distance = idx[:, None] - idx[None, :]
        allowed = allowed & (distance < sliding_window if causal else distance.abs() <= sliding_window)
    mask = torch.zeros(batch, 1, seq, seq, dtype=dtype, device=attention_mask.device)
    return mask.masked_fill(~allowed, torch.finfo(dtype).min)


def position_ids_for(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions that count real tokens only, so a left-padded text sits at 0..n-1 as when alone."""
    return (attention_mask.long().cumsum(dim=1) - 1).clamp(min=0)
