"""CacheKey identity, KVEntry validation, and int8 quantization."""

from __future__ import annotations

import dataclasses
import hashlib
import re

import pytest
import torch

from egtlm_core.cache import CacheKey, KVEntry, dequantize_int8, quantize_int8

FIELDS = dict(model="m", tokenizer="t", dtype="float32", capture="causal", rope="r", prefix="p")

# --- CacheKey ----------------------------------------------------------------------------------


def test_key_string_is_stable_and_filename_safe():
    key = CacheKey.for_text("Paris is in France.", **FIELDS)
    # Golden value: a change here orphans every cache on users' disks, so it must be deliberate
    # (it last changed when keys gained the attention kernel and the storage format).
    assert key.to_string() == "74ad895749d75e410380ac477a37c88f89391c18dd993bf0dde833099b806a08"
    assert re.fullmatch(r"[0-9a-f]{64}", key.to_string())
    assert CacheKey.for_text("Paris is in France.", **FIELDS).to_string() == key.to_string()


def test_for_text_hashes_the_text():
    key = CacheKey.for_text("héllo", **FIELDS)
    assert key.text == hashlib.sha256("héllo".encode()).hexdigest()
    assert key == CacheKey.for_text("héllo", **FIELDS) and hash(key) == hash(
        CacheKey.for_text("héllo", **FIELDS)
    )


def test_every_field_changes_the_string():
    base = CacheKey.for_text("doc", **FIELDS)
    variants = [
        dataclasses.replace(base, **{f.name: "bidirectional" if f.name == "capture" else "x"})
        for f in dataclasses.fields(CacheKey)
    ]
    strings = {base.to_string(), *(v.to_string() for v in variants)}
    assert len(strings) == 1 + len(variants) == 10


def test_field_boundaries_are_unambiguous():
    a = CacheKey(**{**FIELDS, "model": "ab", "tokenizer": "c"}, text="0")
    b = CacheKey(**{**FIELDS, "model": "a", "tokenizer": "bc"}, text="0")
    assert a.to_string() != b.to_string()


def test_key_round_trips_through_a_dict_and_is_frozen():
    key = CacheKey.for_text("doc", **FIELDS)
    assert CacheKey.from_dict(key.to_dict()) == key
    with pytest.raises(dataclasses.FrozenInstanceError):
        key.model = "other"  # type: ignore[misc]


def test_key_rejects_bad_fields():
    with pytest.raises(ValueError, match="Unknown capture 'sideways'"):
        CacheKey.for_text("doc", **{**FIELDS, "capture": "sideways"})
    with pytest.raises(TypeError, match="model"):
        CacheKey.for_text("doc", **{**FIELDS, "model": 3})


# --- KVEntry -----------------------------------------------------------------------------------


def test_entry_properties(make_entry):
    entry = make_entry(seq=5, layers=2, heads=3, head_dim=8, dtype=torch.float16)
    entry.validate()
    assert (entry.num_tokens, entry.num_layers, entry.dtype) == (5, 2, torch.float16)
    assert entry.nbytes == 2 * 2 * 3 * 5 * 8 * 2


def test_clone_shares_nothing(make_entry):
    entry = make_entry()
    copy = entry.clone()
    copy.keys[0].zero_()
    copy.token_ids[0] = -1
    copy.meta["x"] = "y"
    assert not torch.equal(entry.keys[0], copy.keys[0])
    assert entry.token_ids[0] != -1 and "x" not in entry.meta


def _drop_a_value_layer(e: KVEntry) -> None:
    e.values.pop()


def _short_token_ids(e: KVEntry) -> None:
    e.token_ids = e.token_ids[:-1]


def _values_differ_in_shape(e: KVEntry) -> None:
    e.values[1] = e.values[1][:, :, :4]


def _batch_dim_left_in(e: KVEntry) -> None:
    e.keys[0] = e.keys[0].unsqueeze(0)


def _int32_token_ids(e: KVEntry) -> None:
    e.token_ids = e.token_ids.int()


def _mixed_dtypes(e: KVEntry) -> None:
    e.keys[1], e.values[1] = e.keys[1].half(), e.values[1].half()


def _no_layers(e: KVEntry) -> None:
    e.keys, e.values = [], []


def _negative_offset(e: KVEntry) -> None:
    e.position_offset = -1


def _integer_states(e: KVEntry) -> None:
    e.keys[0], e.values[0] = e.keys[0].long(), e.values[0].long()


def _non_string_meta(e: KVEntry) -> None:
    e.meta = {"n": 3}  # type: ignore[dict-item]


@pytest.mark.parametrize(
    "damage",
    [
        _drop_a_value_layer,
        _short_token_ids,
        _values_differ_in_shape,
        _batch_dim_left_in,
        _int32_token_ids,
        _mixed_dtypes,
        _no_layers,
        _negative_offset,
        _integer_states,
        _non_string_meta,
    ],
)
def test_validate_catches_inconsistent_entries(make_entry, damage):
    entry = make_entry()
    damage(entry)
    with pytest.raises(ValueError):
        entry.validate()


# --- int8 quantization -------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_quantize_error_is_within_a_step_per_channel(dtype):
    t = torch.randn(3, 300, 64, generator=torch.Generator().manual_seed(0))
    t[:, :, 7] *= 50.0  # an outlier channel
    t = t.to(dtype)
    q, scale = quantize_int8(t)
    assert q.dtype == torch.int8 and q.shape == t.shape
    assert scale.shape == (3, 1, 64) and scale.dtype == torch.float32
    back = dequantize_int8(q, scale, dtype)
    assert back.dtype == dtype
    bound = t.float().abs().amax(dim=-2, keepdim=True) / 127 + 1e-6
    assert bool(((back.float() - t.float()).abs() <= bound).all())


def test_quantize_keeps_zero_channels_and_empty_sequences_exact():
    t = torch.randn(2, 10, 4)
    t[:, :, 1] = 0.0
    q, scale = quantize_int8(t)
    assert bool((dequantize_int8(q, scale, torch.float32)[:, :, 1] == 0).all())
    q, scale = quantize_int8(torch.empty(2, 0, 4))
    assert q.shape == (2, 0, 4) and dequantize_int8(q, scale, torch.float32).shape == (2, 0, 4)


@pytest.mark.parametrize(
    "bad", [torch.tensor([[float("nan"), 1.0]]), torch.ones(2, 3, dtype=torch.int64), torch.ones(4)]
)
def test_quantize_rejects_what_it_cannot_represent(bad):
    with pytest.raises(ValueError):
        quantize_int8(bad)
