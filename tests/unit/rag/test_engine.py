"""Shared-cache RAG through the public API: `EgtLM.index` / `EgtLM.answer` (`egtlm_core.rag.engine`)."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from rag_fixtures import DOCS, QUESTION, load

from egtlm_core.cache import DiskTier, MemoryTier, TieredStore

NEW_TOKENS = 6


# --- index ----------------------------------------------------------------------------------------
def test_index_embeds_documents_and_stores_their_states(tiny_llama_dir):
    m = load(tiny_llama_dir)
    ids = m.index(DOCS)
    assert len(ids) == 3 and len(set(ids)) == 3 and all(isinstance(i, str) and i for i in ids)
    assert m.index(DOCS) == ids  # ids are stable (content hashes) and re-indexing adds nothing
    assert m.documents.ids == ids and m.documents.texts == DOCS
    np.testing.assert_allclose(m.documents.vectors, m.encode_documents(DOCS), atol=1e-5)
    assert len(m._rag.store) == len(DOCS) + 1  # the documents and the prefix

    result = m.answer(QUESTION, DOCS, max_new_tokens=NEW_TOKENS)
    assert result.reuse.hits == len(DOCS) + 1 and result.reuse.misses == 0
    assert result.documents == DOCS


def test_a_document_past_the_context_is_embedded_but_not_captured(tiny_llama_dir):
    store = MemoryTier()
    m = load(tiny_llama_dir, store)
    long = "word " * 2 * m.model.config.max_position_embeddings
    with pytest.warns(UserWarning) as caught:
        ids = m.index([long, "A short document."])
    messages = [str(w.message) for w in caught]
    assert any("truncated" in msg for msg in messages)  # the embedding reads its first tokens
    assert any("positions [0]" in msg and "split long texts into chunks" in msg for msg in messages)
    assert len(ids) == 2 and m.documents.ids == ids  # still retrievable
    assert len(store) == 2  # the shared prefix and the short document, not the long one
    with pytest.raises(ValueError, match="context holds"):
        m.answer("What is it?", documents=[long])


def test_index_with_explicit_ids_and_dict_documents(tiny_llama_dir):
    m = load(tiny_llama_dir)
    docs = [{"title": "France", "text": DOCS[0]}, DOCS[1]]
    assert m.index(docs, ids=["a", "b"]) == ["a", "b"]
    assert m.documents.texts == [f"France {DOCS[0]}", DOCS[1]]
    with pytest.raises(ValueError):
        m.index(DOCS, ids=["only-one"])
    assert m.index([]) == []


def test_first_answer_on_an_empty_store_counts_only_misses(tiny_llama_dir):
    m = load(tiny_llama_dir)
    first = m.answer(QUESTION, DOCS, max_new_tokens=NEW_TOKENS)
    assert first.reuse.misses == len(DOCS) + 1 and first.reuse.hits == 0
    second = m.answer(QUESTION, DOCS, max_new_tokens=NEW_TOKENS)
    assert second.reuse.hits == len(DOCS) + 1 and second.reuse.misses == 0
    assert second.text == first.text


# --- retrieval ----------------------------------------------------------------------------------------
def test_answer_without_documents_retrieves_the_top_k(tiny_llama_dir):
    m = load(tiny_llama_dir)
    m.index(DOCS)
    scores = m.encode_documents(DOCS) @ m.encode_queries(QUESTION)
    order = [DOCS[i] for i in np.argsort(-scores)]
    for k in (1, 2, 3):
        assert m._rag.retrieve(QUESTION, k) == order[:k]
        result = m.answer(QUESTION, k=k, max_new_tokens=NEW_TOKENS)
        assert result.documents == order[:k]
        assert result.reuse.misses == 0 and result.reuse.hits == k + 1
        assert result.text == m.answer(QUESTION, order[:k], max_new_tokens=NEW_TOKENS, reuse_cache=False).text
    assert m.answer(QUESTION, k=10, max_new_tokens=2).documents == order


def test_answer_with_nothing_indexed_uses_no_documents(tiny_llama_dir):
    m = load(tiny_llama_dir)
    result = m.answer(QUESTION, max_new_tokens=NEW_TOKENS)
    assert result.documents == []
    assert result.text == m.answer(QUESTION, [], max_new_tokens=NEW_TOKENS, reuse_cache=False).text


# --- the answer API ----------------------------------------------------------------------------------
def test_stream_yields_pieces_that_join_to_the_text(tiny_llama_dir):
    m = load(tiny_llama_dir)
    text = m.answer(QUESTION, DOCS[:2], max_new_tokens=12).text
    pieces = m.answer(QUESTION, DOCS[:2], max_new_tokens=12, stream=True)
    assert not isinstance(pieces, str)
    pieces = list(pieces)
    assert all(isinstance(p, str) for p in pieces)
    assert "".join(pieces) == text and text


def test_answer_takes_chats_options_object_and_streams_like_chat(tiny_llama_dir):
    """One options object for chat and answer (answer's own defaults: 128 tokens, reuse on), and
    one streaming convention: `stream_chat` / `stream_answer`."""
    from egtlm_core import GenerationOptions

    m = load(tiny_llama_dir)
    options = GenerationOptions(max_new_tokens=6, reuse_cache=False)
    full = m.answer(QUESTION, DOCS[:2], options=options)
    assert full.reuse.reused_tokens == 0 and full.completion_tokens <= 6
    reused = m.answer(QUESTION, DOCS[:2], options=options, reuse_cache=True)  # a keyword wins
    assert reused.reuse.reused_tokens > 0
    with m.stream_answer(QUESTION, DOCS[:2], max_new_tokens=6) as stream:
        assert "".join(stream) == reused.text
    assert stream.result.reused_tokens == reused.reused_tokens
    with pytest.raises(TypeError, match="max_new_tokens"):
        m.answer(QUESTION, DOCS[:2], max_new_token=4)  # a typo is named, with the option meant
    with pytest.raises(ValueError, match="use chat"):
        m.answer(QUESTION, DOCS[:2], response_format={"type": "json_object"})


class Forcer:
    """A logits processor that records each step's scores and, given tokens, forces them."""

    def __init__(self, tokens: list[int] | None = None):
        self.tokens, self.scores, self.prompt = tokens, [], None

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if self.prompt is None:
            self.prompt = input_ids[0].tolist()
        self.scores.append(scores[0].clone())
        if self.tokens is None:
            return scores
        forced = torch.full_like(scores, float("-inf"))
        forced[:, self.tokens[len(self.scores) - 1]] = 0.0
        return forced


def test_answer_runs_logits_processors_on_every_step_with_and_without_reuse(tiny_llama_dir):
    """What teacher forcing through the reuse path needs: every step's scores, the prompt's ids."""
    m = load(tiny_llama_dir)
    free = Forcer()
    full = m.answer(QUESTION, DOCS[:1], reuse_cache=False, max_new_tokens=NEW_TOKENS, logits_processor=[free])
    chosen = [int(s.argmax()) for s in free.scores]
    assert len(free.prompt) == full.prompt_tokens and len(chosen) == full.completion_tokens
    forced = Forcer(chosen)
    reused = m.answer(QUESTION, DOCS[:1], max_new_tokens=len(chosen), logits_processor=[forced])
    assert reused.reused_tokens > 0 and reused.text == full.text and forced.prompt == free.prompt
    # one document right after the prefix is exact: the same scores at every step
    torch.testing.assert_close(torch.stack(forced.scores), torch.stack(free.scores), atol=1e-4, rtol=0)

    words = m.tokenizer("the lazy dog", add_special_tokens=False)["input_ids"]
    for reuse in (True, False):
        result = m.answer(
            QUESTION, DOCS[:1], reuse_cache=reuse, max_new_tokens=len(words), logits_processor=[Forcer(words)]
        )
        assert result.text == "the lazy dog"


@pytest.mark.parametrize("question", ["", "   \n", None, 42])
def test_bad_question_raises(tiny_llama_dir, question):
    m = load(tiny_llama_dir)
    with pytest.raises(ValueError):
        m.answer(question, DOCS[:1], max_new_tokens=2)


def test_concurrent_answers_equal_sequential_ones(tiny_llama_dir):
    jobs = [
        ("What is the capital of France?", DOCS[:1]),
        ("What is a fox?", DOCS[1:2]),
        ("Where did the cat sit?", DOCS[1:]),
        ("Which dog?", DOCS),
    ]
    sequential_lm = load(tiny_llama_dir)
    sequential = [sequential_lm.answer(q, d, max_new_tokens=NEW_TOKENS).text for q, d in jobs]
    # single-document answers are exact, so they also equal a full prefill
    for (q, d), text in zip(jobs[:2], sequential[:2], strict=True):
        assert text == sequential_lm.answer(q, d, max_new_tokens=NEW_TOKENS, reuse_cache=False).text

    m = load(tiny_llama_dir)  # its own empty store: threads hit, miss and capture at the same time
    m.index(DOCS[:2])
    results: list[str | None] = [None] * len(jobs)
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(jobs))

    def work(i: int) -> None:
        try:
            barrier.wait()
            q, d = jobs[i]
            results[i] = m.answer(q, d, max_new_tokens=NEW_TOKENS).text
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert results == sequential


# --- the disk tier: damaged entries are recomputed -----------------------------------------------------
def _damage(kind: str, path: Path, other: Path) -> None:
    data = path.read_bytes()
    if kind == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif kind == "flip":
        flipped = bytearray(data)
        for i in (len(data) - 1, len(data) - 7, len(data) // 2 + 3):
            flipped[i] ^= 0xFF
        path.write_bytes(bytes(flipped))
    elif kind == "stale":
        path.write_bytes(other.read_bytes())
    elif kind == "empty":
        path.write_bytes(b"")
    else:
        raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["truncate", "flip", "stale", "empty"])
def test_damaged_disk_entries_are_recomputed(tiny_llama_dir, tmp_path, kind):
    store = DiskTier(tmp_path / "kv")
    m = load(tiny_llama_dir, store=store)
    m.index(DOCS)
    fresh = m.answer(QUESTION, DOCS, max_new_tokens=NEW_TOKENS)
    assert fresh.reuse.misses == 0
    plan = m._rag.plan(QUESTION, DOCS)
    reuser = m._rag.reuser
    paths = [store.path_for(reuser.key(s, plan.prefix)) for s in [plan.prefix, *plan.documents]]
    assert all(p.exists() for p in paths)
    snapshot = [store.get(reuser.key(s, plan.prefix)).clone() for s in [plan.prefix, *plan.documents]]

    damaged = paths[1:]  # every document; the prefix file is left intact
    for i, path in enumerate(damaged):
        _damage(kind, path, other=damaged[(i + 1) % len(damaged)])
    before = store.stats
    again = m.answer(QUESTION, DOCS, max_new_tokens=NEW_TOKENS)  # no exception
    after = store.stats
    assert again.text == fresh.text
    assert again.reuse.misses == len(DOCS) and again.reuse.hits == 1
    assert after.corrupt - before.corrupt == len(DOCS)
    assert after.misses - before.misses >= len(DOCS)
    # the recomputed entries were written back, intact and equal to the originals
    third = m.answer(QUESTION, DOCS, max_new_tokens=NEW_TOKENS)
    assert third.reuse.misses == 0 and third.text == fresh.text
    for s, want in zip([plan.prefix, *plan.documents], snapshot, strict=True):
        got = store.get(reuser.key(s, plan.prefix))
        assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(got.keys, want.keys, strict=True))


def test_damaged_prefix_file_is_recomputed_too(tiny_llama_dir, tmp_path):
    store = DiskTier(tmp_path / "kv")
    m = load(tiny_llama_dir, store=store)
    m.index(DOCS[:1])
    fresh = m.answer(QUESTION, DOCS[:1], max_new_tokens=NEW_TOKENS)
    plan = m._rag.plan(QUESTION, DOCS[:1])
    _damage("truncate", store.path_for(m._rag.reuser.key(plan.prefix, None)), other=Path())
    again = m.answer(QUESTION, DOCS[:1], max_new_tokens=NEW_TOKENS)
    assert again.text == fresh.text and again.reuse.misses == 1
    assert store.stats.corrupt == 1


def test_tiered_store_falls_back_to_disk_and_survives_a_new_process(tiny_llama_dir, tmp_path):
    directory = tmp_path / "kv"
    m = load(tiny_llama_dir, store=TieredStore([MemoryTier(), DiskTier(directory)]))
    m.index(DOCS)
    fresh = m.answer(QUESTION, DOCS, max_new_tokens=NEW_TOKENS)
    # another EgtLM (as in a new process): empty memory, same disk directory
    later = load(tiny_llama_dir, store=TieredStore([MemoryTier(), DiskTier(directory)]))
    result = later.answer(QUESTION, DOCS, max_new_tokens=NEW_TOKENS)
    assert result.reuse.misses == 0 and result.reuse.hits == len(DOCS) + 1
    assert result.text == fresh.text
    assert len(later._rag.store.tiers[0]) == len(DOCS) + 1  # disk hits were copied into memory


@pytest.mark.parametrize("bad", [-1, 2.5, True, "8"])
def test_bad_recompute_tokens_is_refused_at_the_call(tiny_llama_dir, bad):
    m = load(tiny_llama_dir)
    with pytest.raises(ValueError, match="recompute_tokens must be an integer"):
        m.answer(QUESTION, DOCS, recompute_tokens=bad)
    with pytest.raises(ValueError, match="recompute_tokens must be an integer"):
        m.chat([{"role": "user", "content": "hi"}], reuse_cache=True, recompute_tokens=bad)
    with pytest.raises(ValueError, match="recompute_tokens must be an integer"):
        m.stream_chat([{"role": "user", "content": "hi"}], recompute_tokens=bad)
