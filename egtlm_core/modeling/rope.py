"""Moving cached keys to new positions by re-rotating them (RoPE), and when that is not allowed.

A RoPE key computed at position p is k_p = R(p·θ) k. Rotations compose, so R(Δ·θ) k_p = k_{p+Δ}:
`k' = k·cos(Δθ) + rotate_half(k)·sin(Δθ)` in the Hugging Face half-split layout. The math runs in
float32 and is exact up to rounding. Values carry no position and are never touched.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

# RoPE variants whose frequencies depend on the sequence length: a key rotated for one length is
# wrong for another, so cached keys cannot be moved.
LENGTH_DEPENDENT_ROPE = ("dynamic", "longrope")


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def rerotate_keys(
    keys: torch.Tensor, delta: int, inv_freq: torch.Tensor, out: torch.Tensor | None = None
) -> torch.Tensor:
    """Keys [..., seq, head_dim] computed at positions p -> the same keys at p + delta (new tensor,
    or written into `out`, of any dtype, and returned: the float32 result is rounded once)."""
    if delta == 0:
        return keys.clone() if out is None else out.copy_(keys)
    angles = float(delta) * inv_freq.to(device=keys.device, dtype=torch.float32)  # [head_dim / 2]
    cos, sin = angles.cos(), angles.sin()  # HF layout: both halves use the same angles
    k = keys.float()
    half = k.shape[-1] // 2
    x1, x2 = k[..., :half], k[..., half:]
    # k·cos + rotate_half(k)·sin written half by half into one new tensor: the textbook form makes
    # three full-size temporaries, and fresh large allocations (page faults) dominated its cost.
    rotated = torch.empty_like(k)
    lo, hi = rotated[..., :half], rotated[..., half:]
    torch.mul(x1, cos, out=lo).addcmul_(x2, sin, value=-1.0)
    torch.mul(x2, cos, out=hi).addcmul_(x1, sin)
    return rotated.to(keys.dtype) if out is None else out.copy_(rotated)


@dataclass(frozen=True)
class RopeInfo:
    """What cache reuse needs to know about a model's positions."""

    inv_freq: torch.Tensor
    rope_type: str
    fingerprint: str  # enters the cache key: caches from another RoPE setup are never mixed
    sliding_window: int | None

    def reuse_problem(self, context_length: int) -> str | None:
        """Why cached states cannot be moved into a context of this length, or None if they can."""
        if self.rope_type in LENGTH_DEPENDENT_ROPE:
            return f"RoPE type {self.rope_type!r} changes its frequencies with the sequence length"
        if self.sliding_window is not None and context_length > self.sliding_window:
            return (
                f"the model's sliding window ({self.sliding_window} tokens) is shorter than the "
                f"context ({context_length} tokens)"
            )
        return None


def rope_info(model: Any) -> RopeInfo:
    """Read the rotary setup from a loaded Hugging Face model (the causal LM or its body)."""
    body = getattr(model, "base_model", model)
    rotary = getattr(body, "rotary_emb", None)
    if rotary is None or not hasattr(rotary, "inv_freq"):
        raise ValueError(
            f"{type(model).__name__} has no rotary embedding; KV cache reuse needs a RoPE model."
        )
    config = body.config
    params = getattr(config, "rope_parameters", None) or {}
    rope_type = params.get("rope_type", getattr(rotary, "rope_type", "default"))
    layer_types = getattr(config, "layer_types", None) or []
    window = getattr(config, "sliding_window", None)
    uses_window = window is not None and (not layer_types or "sliding_attention" in layer_types)
    inv_freq = rotary.inv_freq.detach().float().cpu()
    fingerprint = f"{rope_type}:{sorted((k, str(v)) for k, v in params.items())}:{inv_freq.numel()}"
    return RopeInfo(inv_freq, rope_type, fingerprint, window if uses_window else None)
