"""Moving cached keys to new positions by re-rotating them (RoPE), and when that is not allowed.

A RoPE key computed at position p is k_p = R(p·θ) k. Rotations compose, so R(Δ·θ) k_p = k_{p+Δ}:
`k' = k·cos(Δθ) + rotate_half(k)·sin(Δθ)` in the Hugging Face half-split layout. The math runs in
float32 and is exact up to rounding. Values carry no position and are never touched.

That holds for one rotation, over the whole head, on every layer, in the half-split layout, with
frequencies that do not depend on the length. `rope_info` checks each of these on the loaded model
and names the first that fails (`RopeInfo.reuse_problem`), so the RAG path prefills in full with
that reason instead of moving keys wrongly: models without RoPE (GPT-2), layers without it
(`no_rope_layers`: SmolLM3, Llama 4), partial rotary (`partial_rotary_factor`: Phi, StableLM,
GPT-NeoX), several rotations (Gemma 3's local/global `layer_types`), the interleaved layout
(Cohere, GLM, GPT-J) and RoPE types not known to be static.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

# RoPE variants whose frequencies depend on the sequence length: a key rotated for one length is
# wrong for another, so cached keys cannot be moved.
LENGTH_DEPENDENT_ROPE = ("dynamic", "longrope")
# RoPE types whose frequencies are fixed at load time (yarn's attention factor scales cos and sin
# alike, which a rotation keeps): re-rotation is exact for these and refused for any other.
STATIC_ROPE = ("default", "linear", "llama3", "yarn")
# Architectures that rotate interleaved pairs (x0, x1), (x2, x3)... instead of HF's half split.
INTERLEAVED_ROPE_MODELS = ("cohere", "cohere2", "glm", "glm4", "gptj", "codegen")


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def rerotate_keys(
    keys: torch.Tensor, delta: int, inv_freq: torch.Tensor, out: torch.Tensor | None = None
) -> torch.Tensor:
    """Keys [..., seq, head_dim] computed at positions p -> the same keys at p + delta (new tensor,
    or written into `out`, of any dtype, and returned: the float32 result is rounded once).

    Raises ValueError unless `inv_freq` covers the whole head (head_dim / 2 frequencies): a shorter
    one would broadcast into silently wrong keys.
    """
    if inv_freq.dim() != 1 or 2 * inv_freq.numel() != keys.shape[-1]:
        raise ValueError(
            f"Cannot re-rotate keys of head_dim {keys.shape[-1]} with {inv_freq.numel()} RoPE "
            "frequencies; re-rotation needs one rotation over the whole head (see rope_info)."
        )
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
    unsupported: str | None = None  # why this model's keys cannot be moved at all

    def reuse_problem(self, context_length: int) -> str | None:
        """Why cached states cannot be moved into a context of this length, or None if they can."""
        if self.unsupported is not None:
            return self.unsupported
        if self.rope_type in LENGTH_DEPENDENT_ROPE:
            return f"RoPE type {self.rope_type!r} changes its frequencies with the sequence length"
        if self.rope_type not in STATIC_ROPE:
            return f"RoPE type {self.rope_type!r} is not known to keep its frequencies fixed"
        if self.sliding_window is not None and context_length > self.sliding_window:
            return (
                f"the model's sliding window ({self.sliding_window} tokens) is shorter than the "
                f"context ({context_length} tokens)"
            )
        return None


def rope_info(model: Any) -> RopeInfo:
    """Read the rotary setup from a loaded Hugging Face model (the causal LM or its body).

    Never raises for an unusual model: what re-rotation cannot handle comes back as
    `unsupported`, the reason `reuse_problem` gives.
    """
    body = getattr(model, "base_model", model)
    config = body.config
    params = getattr(config, "rope_parameters", None) or {}
    rotary = getattr(body, "rotary_emb", None)
    problem = layout_problem(config, params, rotary)
    if problem is not None or rotary is None:
        problem = problem or "the model has no rotary position embedding"
        return RopeInfo(torch.zeros(0), "unsupported", f"unsupported:{problem}", None, unsupported=problem)
    rope_type = params.get("rope_type", getattr(rotary, "rope_type", "default"))
    layer_types = getattr(config, "layer_types", None) or []
    window = getattr(config, "sliding_window", None)
    uses_window = window is not None and (not layer_types or "sliding_attention" in layer_types)
    inv_freq = rotary.inv_freq.detach().float().cpu()
    fingerprint = f"{rope_type}:{sorted((k, str(v)) for k, v in params.items())}:{inv_freq.numel()}"
    return RopeInfo(inv_freq, rope_type, fingerprint, window if uses_window else None)


def layout_problem(config: Any, params: dict[str, Any], rotary: Any) -> str | None:
    """Why this model's RoPE is not one full-width, half-split rotation on every layer, or None."""
    several = [n for n in dir(rotary) if n.endswith("_inv_freq") and "original" not in n] if rotary else []
    nested = sorted(k for k, v in params.items() if isinstance(v, dict))
    if several or nested or hasattr(config, "rope_local_base_freq"):
        kinds = ", ".join(nested or sorted(several)) or "local and global"
        return f"the model uses several RoPE rotations ({kinds} layers, as Gemma 3)"
    if rotary is None or not isinstance(getattr(rotary, "inv_freq", None), torch.Tensor):
        return "the model has no rotary position embedding (RoPE) to move cached keys with"
    flags = getattr(config, "no_rope_layers", None)
    if flags is not None and not all(flags):
        without = [i for i, f in enumerate(flags) if not f]
        return f"layers {without[:8]} use no RoPE (no_rope_layers), so their keys cannot be re-rotated"
    heads = getattr(config, "num_attention_heads", None)
    head_dim = getattr(config, "head_dim", None) or (config.hidden_size // heads if heads else None)
    factor = params.get("partial_rotary_factor", getattr(config, "partial_rotary_factor", 1.0))
    rotated = 2 * rotary.inv_freq.numel()
    if factor != 1.0 or (head_dim is not None and rotated != head_dim):
        return f"partial rotary: RoPE turns {rotated} of each head's {head_dim} dimensions"
    if getattr(config, "model_type", None) in INTERLEAVED_ROPE_MODELS:
        return f"{config.model_type} rotates interleaved pairs, not the half-split layout re-rotation uses"
    return None
