"""One-pass indexing: with document_context="rag" a document's vector is pooled from the very
forward that captures its KV states, so `index` runs one forward per batch instead of two."""

from __future__ import annotations

import numpy as np
import pytest
from rag_fixtures import DOCS, QUESTION, load

from egtlm_core.rag.capture import capture_batches
from egtlm_core.rag.segment_plan import Segment

LONG = "Retrieval augmented generation reads documents before answering questions. " * 6


def stored_vectors(m, texts):
    """The index's vectors of `texts`, in that order."""
    index = m.documents
    row = {t: i for i, t in enumerate(index.texts)}
    return index.vectors[[row[t] for t in texts]]


def forwards(m):
    """A list that grows by one per forward of the model's transformer body."""
    calls: list[int] = []
    handle = m._rag.reuser.body.register_forward_pre_hook(lambda module, args: calls.append(1))
    return calls, handle


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_one_pass_vectors_equal_encode_documents(tiny_model_dirs, arch) -> None:
    m = load(tiny_model_dirs[arch], document_context="rag")
    texts = [*DOCS, LONG, "Cats."]  # several lengths: the capture batch pads most rows
    m.index(texts)
    np.testing.assert_allclose(stored_vectors(m, texts), m.encode_documents(texts), atol=1e-5)


def test_index_is_one_forward_per_batch_and_states_are_stored(tiny_llama_dir) -> None:
    m = load(tiny_llama_dir, document_context="rag")
    head = m._rag.default_prefix()
    segments = [Segment(tuple(m.tokenizer(t, add_special_tokens=False)["input_ids"]), text=t) for t in DOCS]
    assert m._rag.reuser is not None  # built (and its RoPE inspected) before counting
    calls, handle = forwards(m)
    try:
        m.index(DOCS)
    finally:
        handle.remove()
    assert len(calls) == 1 + len(capture_batches(segments))  # the head, then the documents: no embedding pass
    for segment in segments:
        assert m._rag.store.get(m._rag.reuser.key(segment, head)) is not None
    answer = m.answer(QUESTION, k=2, max_new_tokens=2)
    assert answer.reused_tokens > 0


def test_instruction_context_still_embeds_in_a_pass_of_its_own(tiny_llama_dir) -> None:
    m = load(tiny_llama_dir)  # document_context="instruction"
    assert m._rag.reuser is not None
    calls, handle = forwards(m)
    try:
        m.index(DOCS)
    finally:
        handle.remove()
    assert len(calls) == 1 + 1 + 1  # embedding pass, the head, the capture batch
    np.testing.assert_allclose(stored_vectors(m, DOCS), m.encode_documents(DOCS), atol=1e-5)


def test_one_pass_truncates_the_vector_not_the_states(tiny_llama_dir) -> None:
    m = load(tiny_llama_dir, document_context="rag", max_length=8)
    with pytest.warns(UserWarning, match="truncated"):
        (doc_id,) = m.index([LONG])
    with pytest.warns(UserWarning, match="truncated"):
        want = m.encode_documents(LONG)
    assert m.documents.ids == [doc_id]
    np.testing.assert_allclose(stored_vectors(m, [LONG])[0], want, atol=1e-5)
    head = m._rag.default_prefix()
    segment = Segment(tuple(m.tokenizer(LONG, add_special_tokens=False)["input_ids"]), text=LONG)
    entry = m._rag.store.get(m._rag.reuser.key(segment, head))
    assert entry.num_tokens == len(segment.token_ids) > 8  # the answer sees the whole document


def test_reindexing_stored_documents_still_gives_their_vectors(tiny_llama_dir) -> None:
    m = load(tiny_llama_dir, document_context="rag")
    m.index(DOCS, ids=["a", "b", "c"])
    store, puts = m._rag.store, []
    put = store.put
    store.put = lambda key, entry: (puts.append(key), put(key, entry))[1]  # type: ignore[method-assign]
    m.index(DOCS, ids=["a", "b", "c"])  # replaced by the same texts: states kept, vectors recomputed
    assert puts == []  # stored states are not written again
    head = m._rag.default_prefix()
    for text in DOCS:
        segment = Segment(tuple(m.tokenizer(text, add_special_tokens=False)["input_ids"]), text=text)
        assert m._rag.store.get(m._rag.reuser.key(segment, head)) is not None
    assert len(m.documents) == 3
    np.testing.assert_allclose(stored_vectors(m, DOCS), m.encode_documents(DOCS), atol=1e-5)


def test_a_chain_prefix_keeps_two_passes(tiny_llama_dir) -> None:
    """States captured after a chain's own prompt head are not the context documents embed in."""
    m = load(tiny_llama_dir, document_context="rag")
    m._rag.add_documents(DOCS, prefix="<|im_start|>user\nContext:\n")
    np.testing.assert_allclose(stored_vectors(m, DOCS), m.encode_documents(DOCS), atol=1e-5)
