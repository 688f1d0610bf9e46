"""`SharedDocumentIndex` on a real redis-server: two mirrors of one stream see each other's changes
in one order; a second EgtLM finds a document the first indexed and splices its states from the
shared Redis tier; Redis going away fails writes loudly and serves reads from the mirror."""

from __future__ import annotations

import logging
import uuid

import numpy as np
import pytest

from egtlm_core import EgtLM, MemoryTier, RedisTier, SharedDocumentIndex, TieredStore

redis = pytest.importorskip("redis")


@pytest.fixture
def stream() -> str:
    return f"test:documents:{uuid.uuid4().hex}"


def unit_rows(n: int, dim: int = 4, seed: int = 0) -> np.ndarray:
    rows = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_two_mirrors_see_each_others_changes(redis_url, stream):
    a, b = SharedDocumentIndex(redis_url, stream=stream), SharedDocumentIndex(redis_url, stream=stream)
    vectors = unit_rows(3)
    a.upsert(["x", "y", "z"], ["text x", "text y", "text z"], vectors, [{"n": 1}, {}, {}])
    assert b.ids == ["x", "y", "z"] and b.get(["x"])[0].metadata == {"n": 1}  # type: ignore[union-attr]
    np.testing.assert_array_equal(b.vectors, vectors)  # float32 bytes, exactly
    replaced = b.upsert(["x"], ["text x, changed"], vectors[:1])
    assert [d.text for d in replaced] == ["text x"]  # what the writer's own entry replaced
    assert [d.id for d in b.delete(["y", "missing"])] == ["y"]
    assert a.texts == b.texts == ["text x, changed", "text z"]
    hit = a.search(vectors[2], k=1)[0]
    assert hit.document.id == "z" and hit.score == pytest.approx(1.0, abs=1e-6)
    late = SharedDocumentIndex(redis_url, stream=stream)  # a replica started later replays the log
    assert late.ids == a.ids and len(late) == 2 and "z" in late


def test_a_bad_batch_never_enters_the_log(redis_url, stream):
    a, b = SharedDocumentIndex(redis_url, stream=stream), SharedDocumentIndex(redis_url, stream=stream)
    a.upsert(["x"], ["text"], unit_rows(1))
    with pytest.raises(ValueError, match="dimensions"):
        a.upsert(["y"], ["text y"], unit_rows(1, dim=8))
    with pytest.raises(ValueError, match="Duplicate ids"):
        a.upsert(["y", "y"], ["1", "2"], unit_rows(2))
    with pytest.raises(TypeError):  # metadata must travel as JSON
        a.upsert(["y"], ["text y"], unit_rows(1), [{"when": object()}])
    assert b.ids == ["x"] and a.client.xlen(stream) == 1


def test_an_unreadable_entry_is_skipped_with_a_warning(redis_url, stream, caplog):
    index = SharedDocumentIndex(redis_url, stream=stream)
    index.client.xadd(stream, {"op": "upsert", "docs": "not json"})
    index.upsert(["x"], ["text"], unit_rows(1))
    with caplog.at_level(logging.WARNING):
        assert SharedDocumentIndex(redis_url, stream=stream).ids == ["x"]
    assert "skipping unreadable entry" in caplog.text


def test_redis_going_away_fails_writes_and_serves_reads_from_the_mirror(redis_url, stream, caplog):
    index = SharedDocumentIndex(redis_url, stream=stream)
    index.upsert(["x"], ["text"], unit_rows(1))
    dead = SharedDocumentIndex(client=redis.Redis(port=1, socket_connect_timeout=0.2), stream=stream)
    dead._docs, dead._rows, dead._vectors = index._docs, index._rows, index._vectors  # its mirror so far
    with caplog.at_level(logging.WARNING):
        assert dead.ids == ["x"] and dead.ids == ["x"]
    assert caplog.text.count("Redis unavailable") == 1  # once per outage
    with pytest.raises(ConnectionError, match="was not made"):
        dead.upsert(["y"], ["text y"], unit_rows(1))
    assert dead.ids == ["x"]


def test_a_second_model_finds_and_splices_what_the_first_indexed(redis_url, stream, tiny_llama_dir):
    """Two EgtLMs standing in for two replicas: each has its own RAM tier and its own mirror."""
    prefix = f"test:{uuid.uuid4().hex}:"

    def replica() -> EgtLM:
        store = TieredStore([MemoryTier(), RedisTier(redis_url, prefix=prefix)])
        index = SharedDocumentIndex(redis_url, stream=stream)
        return EgtLM(str(tiny_llama_dir), torch_dtype="float32", cache_store=store, document_index=index,
                     share_weights=False)  # fmt: skip

    first, second = replica(), replica()
    texts = ["Paris is the capital of France.", "Berlin is the capital of Germany."]
    first.index(texts, ["paris", "berlin"])
    assert second.documents.ids == ["paris", "berlin"]
    np.testing.assert_allclose(second.documents.vectors, first.encode_documents(texts), atol=1e-5)
    hits = second.search("capital of France?", k=2)
    assert {h.document.id for h in hits} == {"paris", "berlin"}
    result = second.answer("What is the capital of France?", [h.document.text for h in hits],
                           max_new_tokens=4, temperature=0.0)  # fmt: skip
    assert result.reused_tokens > 0  # the states came from the first model's capture, via Redis
