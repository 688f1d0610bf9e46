"""The Redis tier beyond the common contract: bad values are recomputed, an outage degrades to
misses, and two models that share only the Redis reuse each other's document states."""

from __future__ import annotations

import logging
import uuid

import pytest
from conftest import build_entry, build_key
from redis_server import start_redis

from egtlm_core import EgtLM
from egtlm_core.cache import RedisTier
from egtlm_core.server import free_port

pytest.importorskip("redis")


def fresh(url: str, **kw) -> RedisTier:
    return RedisTier(url, prefix=f"test:{uuid.uuid4().hex}:", **kw)


@pytest.mark.parametrize("damage", ["flip", "truncate", "other_key"])
def test_a_bad_value_is_dropped_and_missed_never_served(redis_url, caplog, damage):
    tier = fresh(redis_url)
    key, other = build_key("a"), build_key("b")
    tier.put(key, build_entry())
    tier.put(other, build_entry(seed=3))
    name = tier.prefix + key.to_string()
    data = bytearray(tier.client.get(name))
    if damage == "flip":
        data[-5] ^= 0x01
    elif damage == "truncate":
        data = data[: len(data) // 2]
    else:  # the value stored for another key, under this key's name
        data = bytearray(tier.client.get(tier.prefix + other.to_string()))
    tier.client.set(name, bytes(data))
    with caplog.at_level(logging.WARNING):
        assert tier.get(key) is None
    assert "dropping a bad value" in caplog.text
    assert tier.stats.corrupt == 1 and not tier.contains(key)  # deleted: the next put recomputes it
    assert tier.get(other) is not None


def test_redis_going_away_degrades_to_misses_with_one_warning(caplog):
    port = free_port()
    server = start_redis(port)
    tier = RedisTier(f"redis://127.0.0.1:{port}/0", timeout_s=0.5)
    key = build_key("a")
    tier.put(key, build_entry())
    assert tier.get(key) is not None
    server.terminate()
    server.wait(timeout=10)
    with caplog.at_level(logging.WARNING):
        assert tier.get(key) is None  # a miss: the caller recomputes
        tier.put(build_key("b"), build_entry())  # skipped, not raised
        assert not tier.contains(key) and tier.remove(key) is False
        assert tier.stats.bytes == 0
    assert caplog.text.count("Redis unavailable") == 1  # once per outage, not per call
    server = start_redis(port)  # back (empty: this Redis keeps nothing on disk)
    try:
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            tier.put(key, build_entry())
        assert "Redis is back" in caplog.text and tier.get(key) is not None
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_options_are_checked():
    with pytest.raises(ValueError, match="ttl_s"):
        RedisTier("redis://127.0.0.1:1/0", ttl_s=0)
    with pytest.raises(ValueError, match="url"):
        RedisTier(None)


def test_ttl_expires_entries(redis_url):
    tier = fresh(redis_url, ttl_s=60)
    key = build_key("a")
    tier.put(key, build_entry())
    assert 0 < tier.client.ttl(tier.prefix + key.to_string()) <= 60


def test_two_models_sharing_only_redis_reuse_each_others_document_states(redis_url, tiny_llama_dir):
    """What replicas on several machines do: one captures, another answers from the stored states
    (each has its own client; the second's own RAM tier is empty)."""
    prefix = f"test:{uuid.uuid4().hex}:"
    docs = ["Paris is the capital of France.", "Berlin is the capital of Germany."]
    writer = EgtLM(
        str(tiny_llama_dir), torch_dtype="float32", cache_store=RedisTier(redis_url, prefix=prefix)
    )
    writer.document_cache.capture(docs)
    reader_tier = RedisTier(redis_url, prefix=prefix)
    reader = EgtLM(str(tiny_llama_dir), torch_dtype="float32", cache_store=reader_tier)
    reused = reader.answer("Capital of France?", documents=docs, max_new_tokens=4)
    assert reused.reuse is not None and reused.reuse.reused_tokens > 0 and reused.reuse.misses == 0
    assert reader_tier.stats.hits >= len(docs)
    full = reader.answer("Capital of France?", documents=docs, max_new_tokens=4, reuse_cache=False)
    assert reused.text == full.text  # the tiny model's greedy answer, same with stored states
