"""Capturing documents' KV states in padded batches (`egtlm_core.rag.capture`, `KVReuser.index`).

The reference for every captured entry is one plain causal forward of prefix + document from
position 0, its states at the document's positions: a batch must give each document exactly the
states it gets alone, with no pad token's key or value kept.
"""

from __future__ import annotations

import pytest
import torch
from rag_fixtures import DOCS, QUESTION, load

from egtlm_core.modeling.compat import layer_states
from egtlm_core.rag.capture import capture_batch, capture_batches
from egtlm_core.rag.kv_reuse import ReuseStats
from egtlm_core.rag.segment_plan import Segment

# Several lengths, so every batch pads most of its rows (and one row is a single token).
TEXTS = [
    *DOCS,
    "Cats.",
    "Retrieval augmented generation reads documents before answering questions. " * 3,
    "x",
]


def reference_states(m, prefix_ids, doc_ids) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per layer (keys, values) [kv_heads, len(doc), dim] of one forward over prefix + document."""
    ids = torch.tensor([list(prefix_ids) + list(doc_ids)])
    with torch.inference_mode():
        out = m._rag.reuser.body(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=True)
    n = len(prefix_ids)
    return [(k[0, :, n:], v[0, :, n:]) for k, v in layer_states(out.past_key_values)]


def max_diff(entry, reference) -> float:
    pairs = [
        (a, b)
        for (rk, rv), k, v in zip(reference, entry.keys, entry.values, strict=True)
        for a, b in ((rk, k), (rv, v))
    ]
    return max((a - b).abs().max().item() for a, b in pairs)


def segments_and_prefix(m):
    plan = m._rag.plan(QUESTION, TEXTS)
    return plan.documents, plan.prefix


@pytest.mark.parametrize("arch", ["llama", "qwen2", "mistral"])
@pytest.mark.parametrize("side", ["left", "right"])
def test_a_padded_batch_gives_each_document_its_own_states(tiny_model_dirs, arch, side):
    m = load(tiny_model_dirs[arch])
    reuser = m._rag.reuser
    docs, prefix = segments_and_prefix(m)
    assert len({len(d.token_ids) for d in docs}) >= 5  # several lengths: most rows pad
    prefix_cache = reuser._prefix_loader(prefix, ReuseStats())()
    batched = reuser.capture_many(docs, prefix_cache, padding_side=side)
    heads = m.model.config.num_key_value_heads
    for doc, entry in zip(docs, batched, strict=True):
        assert entry.position_offset == len(prefix.token_ids)
        assert entry.token_ids.tolist() == list(doc.token_ids)
        assert all(k.shape[:2] == (heads, len(doc.token_ids)) for k in entry.keys)  # no pad columns
        assert max_diff(entry, reference_states(m, prefix.token_ids, doc.token_ids)) <= 1e-5
        alone = reuser.capture_segment(doc, prefix_cache)
        assert max_diff(entry, list(zip(alone.keys, alone.values, strict=True))) <= 1e-5


@pytest.mark.parametrize("side", ["left", "right"])
def test_a_padded_batch_without_a_prefix(tiny_llama_dir, side):
    m = load(tiny_llama_dir)
    segments = [Segment((5, 6, 7, 8, 9, 10)), Segment((11, 12)), Segment((13, 14, 15, 16))]
    entries = capture_batch(m._rag.reuser.body, segments, None, padding_side=side)
    for segment, entry in zip(segments, entries, strict=True):
        assert entry.position_offset == 0
        assert max_diff(entry, reference_states(m, (), segment.token_ids)) <= 1e-5


def test_bidirectional_batch_equals_documents_captured_alone(tiny_llama_dir):
    m = load(tiny_llama_dir, attention="bidirectional", cache_capture="reuse")
    reuser = m._rag.reuser
    assert reuser.capture == "bidirectional"
    docs, prefix = segments_and_prefix(m)
    prefix_cache = reuser._prefix_loader(prefix, ReuseStats())()
    for side in ("left", "right"):
        batched = reuser.capture_many(docs, prefix_cache, padding_side=side)
        for doc, entry in zip(docs, batched, strict=True):
            alone = reuser.capture_segment(doc, prefix_cache)  # a batch of one: no padding at all
            assert max_diff(entry, list(zip(alone.keys, alone.values, strict=True))) <= 1e-5
            assert entry.meta["capture"] == "bidirectional"
    # and it is not the causal capture
    causal = reference_states(m, prefix.token_ids, docs[0].token_ids)
    assert max_diff(batched[0], causal) > 1e-4


def test_index_captures_in_one_forward_per_batch(tiny_llama_dir, capsys):
    m = load(tiny_llama_dir)
    reuser, store = m._rag.reuser, m._rag.store
    docs, prefix = segments_and_prefix(m)
    calls = []
    hook = reuser.body.register_forward_pre_hook(lambda module, args: calls.append(1))
    try:
        stats = reuser.index(docs, prefix, show_progress=True)
        assert len(calls) == 1 + len(capture_batches(docs)) == 2  # the prefix, then all documents at once
        assert stats.misses == len(docs) + 1 and stats.hits == 0
        assert "Capturing KV states" in capsys.readouterr().err  # the progress bar
        calls.clear()
        again = reuser.index(docs, prefix)
        assert calls == [] and again.hits == len(docs) and again.misses == 0  # stored: nothing captured
    finally:
        hook.remove()
    for doc in docs:
        entry = store.get(reuser.key(doc, prefix))
        assert entry.meta["capture"] == "causal"
        assert max_diff(entry, reference_states(m, prefix.token_ids, doc.token_ids)) <= 1e-5


def test_batches_are_length_sorted_and_bounded():
    segments = [Segment(tuple(range(n))) for n in (5, 300, 40, 41, 3, 1500)]
    batches = capture_batches(segments, max_tokens=200, max_size=2)
    assert sorted(i for b in batches for i in b) == list(range(len(segments)))
    assert batches[0] == [5] and batches[1] == [1]  # longer than the budget: alone
    for batch in batches:
        lengths = [len(segments[i].token_ids) for i in batch]
        assert lengths == sorted(lengths, reverse=True) and len(batch) <= 2
        assert len(batch) == 1 or len(batch) * lengths[0] <= 200
