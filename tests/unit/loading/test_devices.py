"""CPU dtype "auto": decided by the CPU's flags where they can be read, else by a timing."""

from __future__ import annotations

import torch

from egtlm_core.loading import devices

EPYC = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16 avx512_vnni\n"
SKYLAKE = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_vnni\n"
GRAVITON3 = "processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\n"


def _cpuinfo(tmp_path, text):
    path = tmp_path / "cpuinfo"
    path.write_text(text)
    return path


def test_flags_are_read_for_x86_and_arm(tmp_path):
    assert devices.cpu_bf16_flags(_cpuinfo(tmp_path, EPYC)) == ["avx512_bf16"]
    assert devices.cpu_bf16_flags(_cpuinfo(tmp_path, GRAVITON3)) == ["bf16"]
    assert devices.cpu_bf16_flags(_cpuinfo(tmp_path, SKYLAKE)) == []
    assert devices.cpu_bf16_flags(_cpuinfo(tmp_path, "processor\t: 0\n")) is None
    assert devices.cpu_bf16_flags(tmp_path / "missing") is None


def test_flags_decide_without_timing(tmp_path, monkeypatch):
    def no_timing():
        raise AssertionError("timed although the flags were known")

    monkeypatch.setattr(devices, "cpu_dtype_timings", no_timing)
    dtype, why = devices._cpu_dtype_from(["avx512_bf16"])
    assert dtype == torch.bfloat16 and "avx512_bf16" in why
    dtype, why = devices._cpu_dtype_from([])
    assert dtype == torch.float32 and "emulated" in why


def test_unknown_flags_fall_back_to_timing(monkeypatch):
    monkeypatch.setattr(devices, "cpu_dtype_timings", lambda: (2.0, 1.0))
    assert devices._cpu_dtype_from(None)[0] == torch.bfloat16
    monkeypatch.setattr(devices, "cpu_dtype_timings", lambda: (1.0, 0.9))  # a tie keeps fp32
    assert devices._cpu_dtype_from(None)[0] == torch.float32


def test_environment_overrides_at_any_time(monkeypatch):
    monkeypatch.setenv("EGTLM_CPU_DTYPE", "float32")
    assert devices.resolve_dtype("auto", torch.device("cpu")) == torch.float32
    monkeypatch.setenv("EGTLM_CPU_DTYPE", "bf16")
    assert devices.resolve_dtype("auto", torch.device("cpu")) == torch.bfloat16
    assert "EGTLM_CPU_DTYPE=bf16" in devices.cpu_auto_dtype_and_reason()[1]


def test_this_machine_is_decided_the_same_twice():
    assert devices.cpu_auto_dtype() == devices.cpu_auto_dtype()
    assert devices.resolve_dtype("auto", torch.device("cuda")) == torch.bfloat16
