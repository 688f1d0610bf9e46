"""Device and dtype resolution, with "auto" decided by what the CPU can do.

On CUDA, bf16 is always right. On a CPU it depends on the chip: with AVX512-BF16/AMX a bf16 matmul is
about 2x faster than fp32 (measured on the AMD EPYC CI machines), without them bf16 is emulated and
slower. "auto" reads the CPU's flags (/proc/cpuinfo) where it can: a timing alone picked fp32 twice
on a bf16 machine under load, and the dtype must not change from run to run (stored KV states are
keyed by it). Where the flags are unknown it times one matmul of a small model's shape in both
dtypes, once per process, and keeps bf16 only when it clearly wins. `EGTLM_CPU_DTYPE=float32|bfloat16`
overrides both.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from pathlib import Path

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
# CPU flags of native bf16 math: x86 AVX512-BF16 and AMX, Arm's BF16 extension.
BF16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")
CPUINFO = Path("/proc/cpuinfo")


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


def cpu_bf16_flags(cpuinfo: Path = CPUINFO) -> list[str] | None:
    """The native-bf16 flags the CPU lists ([] when it lists flags but none of these), or None
    where the flags cannot be read (no /proc/cpuinfo, or no flags line in it)."""
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            listed = set(value.split())
            return [flag for flag in BF16_FLAGS if flag in listed]
    return None


def cpu_auto_dtype_and_reason() -> tuple[torch.dtype, str]:
    """bf16 or fp32 for this CPU, and why (`EGTLM_CPU_DTYPE`, else decided once per process)."""
    forced = os.environ.get("EGTLM_CPU_DTYPE")
    if forced:
        return resolve_dtype(forced, torch.device("cpu")), f"set by EGTLM_CPU_DTYPE={forced}"
    return _decide_cpu_dtype()


@functools.lru_cache(maxsize=1)
def _decide_cpu_dtype() -> tuple[torch.dtype, str]:
    dtype, reason = _cpu_dtype_from(cpu_bf16_flags())
    logger.info("CPU dtype %s: %s", dtype, reason)
    return dtype, reason


def _cpu_dtype_from(flags: list[str] | None) -> tuple[torch.dtype, str]:
    if flags:
        return torch.bfloat16, f"the CPU has native bfloat16 math ({', '.join(flags)})"
    if flags is not None:
        return torch.float32, "the CPU lists no native bfloat16 math (bfloat16 would be emulated)"
    fp32, bf16 = cpu_dtype_timings()
    chosen = torch.bfloat16 if fp32 / bf16 >= BF16_MIN_SPEEDUP else torch.float32
    return chosen, (
        f"measured on this CPU: a matmul takes {fp32 * 1e3:.2f} ms in float32 and {bf16 * 1e3:.2f} ms in "
        f"bfloat16 ({fp32 / bf16:.2f}x); bfloat16 is chosen when at least {BF16_MIN_SPEEDUP}x faster"
    )


def cpu_auto_dtype() -> torch.dtype:
    """What dtype "auto" means on this CPU (see `cpu_auto_dtype_and_reason`)."""
    return cpu_auto_dtype_and_reason()[0]


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """None/"auto" -> bf16 on CUDA, the measured faster dtype on CPU; names and torch dtypes pass."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype is None or dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else cpu_auto_dtype()
    if isinstance(dtype, str) and dtype.removeprefix("torch.") in DTYPES:
        return DTYPES[dtype.removeprefix("torch.")]
    raise ValueError(f"Unknown dtype {dtype!r}; expected 'auto', a torch.dtype or one of {sorted(DTYPES)}.")
