"""`DocumentCache` (`EgtLM.document_cache`): the one public face of the shared cache."""

from __future__ import annotations

import pytest
from rag_fixtures import DOCS, QUESTION, load

from egtlm_core import DocumentCache, DocumentIndex, HandedOut
from egtlm_core.cache import MemoryTier
from egtlm_core.loading.registry import model_state
from egtlm_core.rag.document_cache import prompt_head
from egtlm_core.rag.engine import SharedState


def _render(template: str):
    return lambda markers: template.format(**markers)


# --- the capture head, one function for every adapter ----------------------------------------------
def test_prompt_head_is_the_text_before_the_documents():
    head = prompt_head(_render("<s>Docs:\n{context}\nQ: {question}"), ["context", "question"], "context")
    assert head == "<s>Docs:\n"


def test_prompt_head_refuses_a_variable_before_the_documents():
    with pytest.raises(ValueError, match=r"\['question'\] before \{context\}"):
        prompt_head(_render("Q: {question}\n{context}"), ["context", "question"], "context")


def test_prompt_head_refuses_a_prompt_without_the_documents():
    with pytest.raises(ValueError, match="does not contain"):
        prompt_head(_render("Q: {question}"), ["context", "question"], "context")
    with pytest.raises(ValueError, match="No {context} variable"):
        prompt_head(_render("Q: {question}"), ["question"], "context")


# --- through EgtLM ----------------------------------------------------------------------------------
def test_one_object_per_model_and_the_shortcuts_use_it(tiny_llama_dir):
    m = load(tiny_llama_dir)
    cache = m.document_cache
    assert isinstance(cache, DocumentCache) and m.document_cache is cache
    ids = m.index(DOCS, ids=["a", "b", "c"])
    assert ids == ["a", "b", "c"] and cache.documents is m.documents and len(cache.documents) == 3
    assert [h.document.id for h in m.search(QUESTION, k=2)] == [
        h.document.id for h in cache.search(QUESTION, 2)
    ]
    assert [d.id for d in cache.delete(["a"])] == ["a"] and len(m.documents) == 2


def test_hand_out_reports_keys_and_whether_states_are_stored(tiny_llama_dir):
    store = MemoryTier()
    m = load(tiny_llama_dir, store)
    cache = m.document_cache
    head = "<|user|>\nDocs:\n"
    (first,) = cache.hand_out(DOCS[:1], head)
    assert isinstance(first, HandedOut) and first.text == DOCS[0] and not first.stored
    assert not store.contains(first.key)
    assert DOCS[0] in {d.text for d in m._rag.known_documents()}  # chat will look for it
    (again,) = cache.hand_out(DOCS[:1], head, capture=True)
    assert again.key == first.key and again.stored and store.contains(again.key)
    assert cache.capture(DOCS[:1], head) == [again.key]
    assert cache.stored_bytes() == store.stats.bytes > 0
    cache.forget(DOCS[:1], head)
    assert not store.contains(again.key)
    assert cache.hand_out([]) == []


def test_the_shared_state_is_one_typed_object_per_loaded_model(tiny_llama_dir):
    a, b = load(tiny_llama_dir), load(tiny_llama_dir)
    assert a._loaded is b._loaded
    state = model_state(a._loaded, SharedState)
    assert isinstance(state, SharedState) and model_state(b._loaded, SharedState) is state
    a.document_cache.hand_out(DOCS[:1])
    assert DOCS[0] in state.known  # handed out by one model's cache, known to the other's engine
    assert DOCS[0] in {d.text for d in b._rag.known_documents()}


def test_a_given_index_is_used_instead_of_the_own(tiny_llama_dir):
    m = load(tiny_llama_dir)
    mine = DocumentIndex()
    m.document_cache.add(DOCS, index=mine)
    assert len(mine) == 3 and len(m.documents) == 0
    (hit,) = m.document_cache.search(QUESTION, 1, index=mine)
    assert hit.document.text in DOCS
