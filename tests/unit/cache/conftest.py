"""Factories for cache keys and entries shared by the cache-store tests."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator

import pytest
import torch

from egtlm_core.cache import CacheKey, KVEntry

KEY_FIELDS = dict(model="m", tokenizer="t", dtype="float32", capture="causal", rope="r", prefix="p")


def build_key(text: str = "doc", **overrides: str) -> CacheKey:
    return CacheKey.for_text(text, **{**KEY_FIELDS, **overrides})


def build_entry(
    seq: int = 5,
    layers: int = 2,
    heads: int = 3,
    head_dim: int = 8,
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
) -> KVEntry:
    g = torch.Generator().manual_seed(seed)
    shape = (heads, seq, head_dim)
    return KVEntry(
        keys=[torch.randn(shape, generator=g).to(dtype) for _ in range(layers)],
        values=[torch.randn(shape, generator=g).to(dtype) for _ in range(layers)],
        token_ids=torch.randint(0, 1000, (seq,), generator=g),
        position_offset=seed % 7,
        meta={"source": f"doc-{seed}"},
    )


@pytest.fixture
def make_key() -> Callable[..., CacheKey]:
    return build_key


@pytest.fixture
def make_entry() -> Callable[..., KVEntry]:
    return build_entry


def int8_bound(reference: torch.Tensor) -> torch.Tensor:
    """Allowed per-element error of int8 storage: 1/127 of the channel's max |value| (over seq)."""
    return reference.float().abs().amax(dim=-2, keepdim=True) / 127 + 1e-6


def assert_entries_match(got: KVEntry, want: KVEntry, int8: bool = False) -> None:
    """Exact equality, or within the int8 bound for keys/values when `int8`."""
    assert got.num_layers == want.num_layers
    assert torch.equal(got.token_ids, want.token_ids)
    assert got.position_offset == want.position_offset
    assert got.meta == want.meta
    for g, w in zip([*got.keys, *got.values], [*want.keys, *want.values], strict=True):
        assert g.dtype == w.dtype and g.shape == w.shape
        if int8:
            assert bool(((g.float() - w.float()).abs() <= int8_bound(w)).all())
        else:
            assert torch.equal(g, w)


@pytest.fixture
def check_entries() -> Callable[..., None]:
    return assert_entries_match


# --- a real Redis on 127.0.0.1 (the shared tier's tests) ------------------------------------------
def start_redis(port: int) -> subprocess.Popen:
    """`redis-server` on 127.0.0.1:`port`, in memory only, ready when this returns."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server; scripts/test.sh does)")
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert process.poll() is None, "redis-server exited at start"
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return process
        time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"redis-server did not listen on port {port} within 20 s")


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """One Redis for the session's tests (each test uses its own key prefix)."""
    pytest.importorskip("redis")
    from egtlm_core.server import free_port

    port = free_port()
    process = start_redis(port)
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(timeout=10)
