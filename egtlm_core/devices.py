"""Device and dtype resolution, with "auto" decided by measurement on CPUs.

On CUDA, bf16 is always right. On a CPU it depends on the chip: with AVX512-BF16/AMX a bf16 matmul is
about 2x faster than fp32 (measured on the AMD EPYC CI machines), without them bf16 is emulated and
slower. So "auto" times one matmul of a small model's shape in both dtypes, once per process, and
keeps bf16 only when it clearly wins. `EGTLM_CPU_DTYPE=float32|bfloat16` overrides the measurement.
"""

from __future__ import annotations

import functools
import logging
import os
import time

import torch

logger = logging.getLogger(__name__)

DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}
# bf16 must beat fp32 by this factor to be chosen: its rounding costs accuracy, so a tie keeps fp32.
BF16_MIN_SPEEDUP = 1.3


def resolve_device(device: str | torch.device | None) -> torch.device:
    """None/"auto" -> CUDA when available, else CPU."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"Unknown device {device!r}; use 'auto', 'cpu', 'cuda' or 'cuda:N'.") from err


def _time_matmul(dtype: torch.dtype, repeats: int = 5) -> float:
    a = torch.randn(256, 576, dtype=dtype)
    b = torch.randn(576, 1536, dtype=dtype)
    a @ b  # warm-up: first call pays for kernel selection
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(4):
            a @ b
        best = min(best, time.perf_counter() - start)
    return best


@functools.lru_cache(maxsize=1)
def cpu_dtype_timings() -> tuple[float, float]:
    """Seconds for the same matmuls in (fp32, bf16) on this CPU, measured once per process."""
    return _time_matmul(torch.float32), _time_matmul(torch.bfloat16)


@functools.lru_cache(maxsize=1)
def cpu_auto_dtype() -> torch.dtype:
    """The faster of bf16 and fp32 for matmuls on this CPU (measured once per process)."""
    forced = os.environ.get("EGTLM_CPU_DTYPE")
    if forced:
        return resolve_dtype(forced, torch.device("cpu"))
    fp32, bf16 = cpu_dtype_timings()
    chosen = torch.bfloat16 if fp32 / bf16 >= BF16_MIN_SPEEDUP else torch.float32
    logger.info("CPU matmul fp32 %.2f ms, bf16 %.2f ms -> %s", fp32 * 1e3, bf16 * 1e3, chosen)
    return chosen


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """None/"auto" -> bf16 on CUDA, the measured faster dtype on CPU; names and torch dtypes pass."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype is None or dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else cpu_auto_dtype()
    if isinstance(dtype, str) and dtype.removeprefix("torch.") in DTYPES:
        return DTYPES[dtype.removeprefix("torch.")]
    raise ValueError(f"Unknown dtype {dtype!r}; expected 'auto', a torch.dtype or one of {sorted(DTYPES)}.")
