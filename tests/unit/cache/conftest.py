"""Factories for cache keys and entries shared by the cache-store tests."""

from __future__ import annotations

from collections.abc import Callable

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
