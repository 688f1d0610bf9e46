"""`DocumentIndex` (`egtlm_core.rag.index`): one place for ids, texts, metadata and vectors."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from rag_fixtures import DOCS, load

from egtlm_core import DocumentIndex
from egtlm_core.cache import MemoryTier


def _unit(rng: np.random.Generator, n: int, d: int = 8) -> np.ndarray:
    v = rng.standard_normal((n, d)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_search_matches_a_brute_force_ranking():
    rng = np.random.default_rng(0)
    vectors, query = _unit(rng, 50), _unit(rng, 1)[0]
    index = DocumentIndex()
    index.add([f"d{i}" for i in range(50)], [f"text {i}" for i in range(50)], vectors)
    expected = sorted(range(50), key=lambda i: -float(vectors[i] @ query))[:7]
    hits = index.search(query, k=7)
    assert [h.document.id for h in hits] == [f"d{i}" for i in expected]
    assert [h.score for h in hits] == pytest.approx([float(vectors[i] @ query) for i in expected], abs=1e-6)
    assert len(index.search(query, k=500)) == 50  # k past the size returns everything, ranked


def test_add_keeps_text_metadata_and_vector_together():
    rng = np.random.default_rng(1)
    index = DocumentIndex()
    vectors = _unit(rng, 2)
    index.add(["a", "b"], ["alpha", "beta"], vectors, [{"source": "x"}, {"source": "y"}])
    a, b, missing = index.get(["a", "b", "nope"])
    assert (a.text, a.metadata, missing) == ("alpha", {"source": "x"}, None)
    assert (b.text, b.metadata) == ("beta", {"source": "y"})
    top = index.search(vectors[1], k=1)[0]
    assert (top.document.id, top.document.metadata) == ("b", {"source": "y"})
    np.testing.assert_array_equal(index.vectors, vectors)


def test_bad_calls_are_rejected_with_what_to_do():
    index = DocumentIndex()
    v = _unit(np.random.default_rng(2), 2)
    with pytest.raises(ValueError, match="Duplicate ids in one call"):
        index.add(["a", "a"], ["x", "y"], v)
    assert len(index) == 0  # nothing half-added
    index.add(["a"], ["x"], v[:1])
    with pytest.raises(ValueError, match="use upsert"):
        index.add(["a"], ["other"], v[1:])
    with pytest.raises(ValueError, match="2 ids for 1 texts"):
        index.upsert(["b", "c"], ["y"], v[:1])
    with pytest.raises(ValueError, match="metadatas"):
        index.upsert(["b"], ["y"], v[:1], [{}, {}])
    with pytest.raises(ValueError, match="dimensions"):
        index.upsert(["b"], ["y"], np.ones((1, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="dimensions"):
        index.search(np.ones(3, dtype=np.float32), k=1)
    for k in (0, -1, 1.5, True, None):
        with pytest.raises(ValueError, match="k must be a positive integer"):
            index.search(v[0], k=k)  # type: ignore[arg-type]
    assert index.texts == ["x"]


def test_upsert_replaces_and_reports_changed_texts():
    rng = np.random.default_rng(3)
    v = _unit(rng, 3)
    index = DocumentIndex()
    index.add(["a", "b"], ["alpha", "beta"], v[:2])
    replaced = index.upsert(["a", "b"], ["alpha", "BETA"], v[1:3], [{"n": 1}, {"n": 2}])
    assert [d.text for d in replaced] == ["beta"]  # only the text that changed
    assert index.texts == ["alpha", "BETA"] and index.get(["a"])[0].metadata == {"n": 1}
    np.testing.assert_array_equal(index.vectors, v[1:3])


def test_delete_moves_rows_and_keeps_search_right():
    rng = np.random.default_rng(4)
    v = _unit(rng, 5)
    index = DocumentIndex()
    index.add(list("abcde"), list("ABCDE"), v)
    removed = index.delete(["b", "zzz", "a"])
    assert [d.id for d in removed] == ["b", "a"] and len(index) == 3 and "a" not in index
    for i, doc_id in zip((2, 3, 4), "cde", strict=True):
        assert index.search(v[i], k=1)[0].document.id == doc_id
    index.add(["a"], ["A again"], v[:1])  # a deleted id can come back
    assert index.search(v[0], k=1)[0].document.text == "A again"


def test_many_documents_in_many_calls_and_threads():
    rng = np.random.default_rng(5)
    index = DocumentIndex()
    vectors = _unit(rng, 4000)

    def add(lo: int) -> None:
        for start in range(lo, lo + 1000, 50):
            ids = [f"d{i}" for i in range(start, start + 50)]
            index.add(ids, ids, vectors[start : start + 50])

    threads = [threading.Thread(target=add, args=(lo,)) for lo in range(0, 4000, 1000)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(index) == 4000 and len(set(index.ids)) == 4000
    for i in (0, 1234, 3999):
        assert index.search(vectors[i], k=1)[0].document.id == f"d{i}"


# --- through EgtLM: replacing a document replaces its stored states ------------------------------
def test_reindexing_an_id_with_new_text_replaces_vector_and_states(tiny_llama_dir):
    store = MemoryTier()
    m = load(tiny_llama_dir, store)
    m.index([DOCS[0]], ids=["doc"])
    old_key = m._rag.cache_keys([DOCS[0]])[0]
    assert store.contains(old_key)
    m.index([DOCS[1]], ids=["doc"])
    assert m.documents.texts == [DOCS[1]]
    np.testing.assert_allclose(m.documents.vectors[0], m.encode_documents(DOCS[1]), atol=1e-5)
    assert not store.contains(old_key) and store.contains(m._rag.cache_keys([DOCS[1]])[0])
    m._rag.delete_documents(["doc"])
    assert len(m.documents) == 0 and not store.contains(m._rag.cache_keys([DOCS[1]])[0])


def test_two_indexes_on_one_model_are_independent(tiny_llama_dir):
    m = load(tiny_llama_dir, MemoryTier())
    mine, yours = DocumentIndex(), DocumentIndex()
    m.index([DOCS[0]], ids=["x"], metadatas=[{"owner": "me"}], index=mine)
    m.index([DOCS[1]], ids=["x"], metadatas=[{"owner": "you"}], index=yours)
    assert [h.document.metadata for h in m.search(DOCS[0], k=5, index=mine)] == [{"owner": "me"}]
    assert [h.document.text for h in m.search(DOCS[0], k=5, index=yours)] == [DOCS[1]]
    assert len(m.documents) == 0  # the model's own index saw neither
