"""Weight-only int8: every `nn.Linear` kept as int8 rows with one scale each (`EgtLM(weights="int8")`).

A decode step of a small model reads every weight once, so its time follows the bytes read and the
speed of the matrix-vector kernel. Here the kernel is torch's own `_weight_int8pack_mm` (activations
stay in the model's dtype; the int8 weights are scaled per output row inside the kernel) for the few
rows of a decode step; larger inputs (prefill, embedding batches) dequantize the weight first. Measured
on an AMD EPYC with AVX-512 (docs/benchmarks/decode_speed.md): 14.7 ms/token against 28.3 in bf16;
torchao's `Int8WeightOnlyConfig` on the same CPU took 58.2 ms/token, and on an AVX2-only EPYC
neither beat fp32, so this is an opt-in whose gain depends on the CPU. One copy of the weights
still serves embedding and generation: both run through the same quantized linears.
"""

from __future__ import annotations

from typing import Any

import torch

WEIGHTS = ("native", "int8")
# Rows (tokens) up to which the int8 kernel runs; above it the weight is dequantized for one ordinary
# matrix product. Measured on the AVX-512 EPYC: the kernel is ~2.8x faster than bf16 at one row and
# ~2x slower on a 32-text embedding batch (STS-B test encode: 136 s against 70 s).
KERNEL_ROWS = 8


def weights_fingerprint(fingerprint: str, weights: str) -> str:
    """A model fingerprint as the weights compute: marked when quantized at load, so the states,
    vectors and shared documents of int8 weights never mix with the native ones'."""
    return fingerprint if weights == "native" else f"{fingerprint}+{weights}"


def check_weights(weights: Any) -> str:
    if weights not in WEIGHTS:
        raise ValueError(
            f"Unknown weights {weights!r}; expected one of {WEIGHTS} (int8: weight-only, opt-in)."
        )
    return str(weights)


def quantize_rows(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-row int8: -> (int8 [out, in], float32 scale [out]) with weight ≈ q * scale."""
    w = weight.detach().float()
    scale = w.abs().amax(dim=1).clamp(min=1e-12) / 127.0
    q = torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8)
    return q.contiguous(), scale


class Int8Linear(torch.nn.Module):
    """`y = x @ (q * scale).T + bias` with `q` int8 and one scale per output row, in `x`'s dtype."""

    def __init__(self, linear: torch.nn.Linear) -> None:
        super().__init__()
        q, scale = quantize_rows(linear.weight)
        dtype = linear.weight.dtype
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.qweight: torch.Tensor
        self.scale: torch.Tensor
        self.register_buffer("qweight", q)
        self.register_buffer("scale", scale.to(dtype))
        self.bias = (
            None if linear.bias is None else torch.nn.Parameter(linear.bias.detach(), requires_grad=False)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features)
        scale = self.scale if self.scale.dtype == flat.dtype else self.scale.to(flat.dtype)
        if flat.shape[0] <= KERNEL_ROWS:  # decoding: the int8 kernel reads half the bytes
            y = torch._weight_int8pack_mm(flat, self.qweight, scale)
        else:  # a prefill or an embedding batch: dequantize once, then the dtype's own matrix product
            y = torch.nn.functional.linear(flat, self.qweight.to(flat.dtype) * scale[:, None])
        y = y.reshape(*x.shape[:-1], self.out_features)
        return y if self.bias is None else y + self.bias

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 weight-only"


def quantize_linears(model: torch.nn.Module) -> int:
    """Replace every `nn.Linear` under `model` by an `Int8Linear` (in place); -> how many.

    A tied LM head becomes an int8 copy of the embedding matrix; the embedding lookup keeps its own
    (native) table. CPU only: the kernel is torch's CPU int8 matrix product.
    """
    if any(p.device.type != "cpu" for p in model.parameters()):
        raise ValueError(
            "weights='int8' runs on CPU (torch's int8 weight-only kernel); load on device='cpu'."
        )
    swapped = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, torch.nn.Linear):
                setattr(parent, name, Int8Linear(child))
                swapped += 1
    return swapped
