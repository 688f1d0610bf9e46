"""Splicing stored KV states into a prompt (`egtlm_core.rag.kv_reuse`) against full-prefill references."""

from __future__ import annotations

import threading
import time

import pytest
import torch
from rag_fixtures import DOCS, QUESTION, load

from egtlm_core import RECOMPUTE_TOKENS, EgtLM
from egtlm_core.rag.segment_plan import SegmentPlan

NEW_TOKENS = 8


def full_logits(m: EgtLM, ids: list[int]) -> torch.Tensor:
    """Next-token logits of a plain causal prefill of `ids`."""
    input_ids = torch.tensor([ids])
    with torch.inference_mode():
        return m.model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids)).logits[0, -1].float()


def reuse_logits(m: EgtLM, plan: SegmentPlan, recompute_tokens: int = 0):
    """Next-token logits of the reuse prefill (stored states spliced, live tokens in one forward)."""
    _, logits, stats = m._rag.reuser.prefill(plan, m.model, recompute_tokens=recompute_tokens)
    return logits[0].float(), stats


def block_attention_logits(m: EgtLM, plan: SegmentPlan, recompute_tokens: int = 0) -> torch.Tensor:
    """The exact single-forward reference for a multi-document plan.

    Documents were captured after the prefix P at |P|.., then re-rotated to their slot p_j. One forward
    over [P] + per doc [copy of P at p_j-|P|..p_j-1, doc_j at p_j..] + live tokens at their own positions,
    with a block mask: each P-copy sees itself causally, doc_j sees its P-copy and itself causally, and
    live tokens see everything before them except the P-copies.

    With `recompute_tokens=r`, doc_j's first r tokens are live (they see everything before them but the
    copies), while its stored tail still saw the *captured* first r tokens: those join the P-copy.
    The engine skips that for the first document (its live head would see only P, as its capture did);
    recomputing it here too checks that skipping it changes nothing.
    """
    prefix = plan.prefix
    assert prefix is not None
    n_prefix = len(prefix.token_ids)
    ids: list[int] = list(prefix.token_ids)
    positions: list[int] = list(range(n_prefix))
    groups: list[tuple[str, int]] = [("prefix", 0)] * n_prefix
    pos = n_prefix
    for j, segment in enumerate(plan.segments[1:]):
        n = len(segment.token_ids)
        if segment.cached:
            r = min(recompute_tokens, n)
            ids += prefix.token_ids + segment.token_ids[:r]
            positions += range(pos - n_prefix, pos + r)
            groups += [("copy", j)] * (n_prefix + r)
            ids += segment.token_ids[:r]
            positions += range(pos, pos + r)
            groups += [("live", j)] * r
            ids += segment.token_ids[r:]
            positions += range(pos + r, pos + n)
            groups += [("doc", j)] * (n - r)
        else:
            ids += segment.token_ids
            positions += range(pos, pos + n)
            groups += [("live", j)] * n
        pos += n
    assert pos == len(plan.token_ids)
    size = len(ids)
    kind = [g[0] for g in groups]
    block = torch.tensor([g[1] for g in groups])
    is_copy = torch.tensor([k == "copy" for k in kind])
    is_doc = torch.tensor([k == "doc" for k in kind])
    is_live = torch.tensor([k == "live" for k in kind])
    is_prefix = torch.tensor([k == "prefix" for k in kind])
    same_block = block[:, None] == block[None, :]
    causal = torch.ones(size, size, dtype=torch.bool).tril()
    allowed = (
        # the prefix and each P-copy: causal within themselves
        (is_prefix[:, None] & is_prefix[None, :])
        | (is_copy[:, None] & is_copy[None, :] & same_block)
        # doc_j (its stored part): its own P-copy and itself
        | (is_doc[:, None] & same_block & (is_copy | is_doc)[None, :])
        # live tokens: the original prefix, every document, earlier live tokens; never a P-copy
        | (is_live[:, None] & ~is_copy[None, :])
    ) & causal
    mask = torch.zeros(1, 1, size, size).masked_fill(~allowed, torch.finfo(torch.float32).min)
    input_ids = torch.tensor([ids])
    with torch.inference_mode():
        out = m.model(input_ids=input_ids, attention_mask=mask, position_ids=torch.tensor([positions]))
    return out.logits[0, -1].float()


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


# --- one document: exact ----------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ["llama", "qwen2", "mistral"])
def test_one_document_after_the_prefix_is_exact(tiny_model_dirs, arch):
    m = load(tiny_model_dirs[arch])
    plan = m._rag.plan(QUESTION, DOCS[:1])
    assert plan.prefix is not None and len(plan.documents) == 1
    got, stats = reuse_logits(m, plan)
    assert max_diff(got, full_logits(m, plan.token_ids)) <= 1e-4
    assert stats.reused_tokens > 0 and stats.fallback is None
    assert stats.reused_tokens + stats.prefilled_tokens == len(plan.token_ids)

    reused = m.answer(QUESTION, DOCS[:1], max_new_tokens=NEW_TOKENS)
    full = m.answer(QUESTION, DOCS[:1], max_new_tokens=NEW_TOKENS, reuse_cache=False)
    assert reused.completion_tokens > 0
    assert reused.text == full.text
    assert reused.reused_tokens > 0 and full.reused_tokens == 0
    assert reused.reused_tokens + reused.prefilled_tokens == len(plan.token_ids)
    assert full.prefilled_tokens == len(plan.token_ids)
    assert reused.prompt_tokens == full.prompt_tokens == len(plan.token_ids)


def test_build_never_changes_the_stored_entries(tiny_llama_dir):
    m = load(tiny_llama_dir)
    m.index(DOCS[:2])
    plan = m._rag.plan(QUESTION, DOCS[:2])
    reuser, store = m._rag.reuser, m._rag.store
    keys = [reuser.key(s, plan.prefix) for s in [plan.prefix, *plan.documents]]
    snapshot = [store.get(k).clone() for k in keys]
    for _ in range(2):
        m.answer(QUESTION, DOCS[:2], max_new_tokens=NEW_TOKENS)
    m.answer(QUESTION, DOCS[:2], max_new_tokens=NEW_TOKENS, recompute_tokens=3)
    for key, before in zip(keys, snapshot, strict=True):
        after = store.get(key)
        assert after.position_offset == before.position_offset
        assert torch.equal(after.token_ids, before.token_ids)
        for a, b in zip([*after.keys, *after.values], [*before.keys, *before.values], strict=True):
            assert torch.equal(a, b)


def test_entries_are_captured_after_the_prefix(tiny_llama_dir):
    m = load(tiny_llama_dir)
    plan = m._rag.plan(QUESTION, DOCS[:1])
    m.index(DOCS[:1])
    reuser, store = m._rag.reuser, m._rag.store
    prefix_entry = store.get(reuser.key(plan.prefix, None))
    doc_entry = store.get(reuser.key(plan.documents[0], plan.prefix))
    assert prefix_entry.position_offset == 0
    assert doc_entry.position_offset == len(plan.prefix.token_ids)
    assert tuple(doc_entry.token_ids.tolist()) == plan.documents[0].token_ids
    assert doc_entry.meta["capture"] == "causal"
    # the same text after another prefix is another key
    other = m._rag.reuser.key(plan.documents[0], plan.documents[0])
    assert other != reuser.key(plan.documents[0], plan.prefix)


# --- many documents: exact against one block-attention forward --------------------------------------
@pytest.mark.parametrize("arch", ["llama", "qwen2", "mistral"])
def test_many_documents_equal_one_block_attention_forward(tiny_model_dirs, arch):
    m = load(tiny_model_dirs[arch])
    plan = m._rag.plan(QUESTION, DOCS)
    assert len(plan.documents) == 3
    got, stats = reuse_logits(m, plan)
    want = block_attention_logits(m, plan)
    assert max_diff(got, want) <= 1e-4
    # later documents never saw the ones before them: not what a full prefill computes
    assert max_diff(got, full_logits(m, plan.token_ids)) > 1e-3
    assert stats.reused_tokens + stats.prefilled_tokens == len(plan.token_ids)
    assert [d["recomputed"] for d in stats.documents if d["position"]] == [0, 0, 0]


def test_recompute_tokens_moves_tokens_from_reused_to_prefilled(tiny_llama_dir):
    m = load(tiny_llama_dir)
    plan = m._rag.plan(QUESTION, DOCS)
    no_repair, base = reuse_logits(m, plan)
    for n in (1, 4):
        got, stats = reuse_logits(m, plan, recompute_tokens=n)
        # the first document's slot is exact: recomputing its head would change nothing
        assert stats.reused_tokens == base.reused_tokens - 2 * n
        assert stats.prefilled_tokens == base.prefilled_tokens + 2 * n
        assert stats.reused_tokens + stats.prefilled_tokens == len(plan.token_ids)
        assert [d["recomputed"] for d in stats.documents if d["position"]] == [0, n, n]
        # exactly what the block-attention reference with n live tokens per document computes
        assert max_diff(got, block_attention_logits(m, plan, recompute_tokens=n)) <= 1e-4
        assert max_diff(got, no_repair) > 1e-4
    result = m.answer(QUESTION, DOCS, max_new_tokens=NEW_TOKENS, recompute_tokens=2)
    assert result.reused_tokens == base.reused_tokens - 4


def test_answers_recompute_the_default_head_of_each_approximate_slot(tiny_llama_dir):
    m = load(tiny_llama_dir)
    plan = m._rag.plan(QUESTION, DOCS)
    sizes = [len(d.token_ids) for d in plan.documents]
    result = m.answer(QUESTION, DOCS, max_new_tokens=NEW_TOKENS)
    want = [0] + [min(RECOMPUTE_TOKENS, n) for n in sizes[1:]]
    assert [d["recomputed"] for d in result.reuse.documents if d["position"]] == want
    assert result.reuse.recomputed_tokens == sum(want)
    spliced = m.answer(QUESTION, DOCS, max_new_tokens=NEW_TOKENS, recompute_tokens=0)
    assert spliced.reuse.recomputed_tokens == 0
    assert spliced.reused_tokens == result.reused_tokens + sum(want)


def test_recomputing_whole_documents_equals_full_prefill(tiny_llama_dir):
    m = load(tiny_llama_dir)
    plan = m._rag.plan(QUESTION, DOCS)
    longest = max(len(d.token_ids) for d in plan.documents)
    got, stats = reuse_logits(m, plan, recompute_tokens=longest)
    assert max_diff(got, full_logits(m, plan.token_ids)) <= 1e-4
    # only the prefix and the first (exact) document still come from the store
    assert stats.reused_tokens == len(plan.prefix.token_ids) + len(plan.documents[0].token_ids)
    full = m.answer(QUESTION, DOCS, max_new_tokens=NEW_TOKENS, reuse_cache=False)
    again = m.answer(QUESTION, DOCS, max_new_tokens=NEW_TOKENS, recompute_tokens=longest + 5)
    assert again.text == full.text


# --- bidirectional capture ---------------------------------------------------------------------------
def test_bidirectional_capture_stores_different_states(tiny_llama_dir):
    causal = load(tiny_llama_dir)
    bidir = load(tiny_llama_dir, attention="bidirectional", cache_capture="reuse")
    assert causal._rag.reuser.capture == "causal"
    assert bidir._rag.reuser.capture == "bidirectional"
    plan = causal._rag.plan(QUESTION, DOCS[:1])
    doc = plan.documents[0]
    causal_key = causal._rag.reuser.key(doc, plan.prefix)
    bidir_key = bidir._rag.reuser.key(doc, plan.prefix)
    assert causal_key.capture == "causal" and bidir_key.capture == "bidirectional"
    assert causal_key != bidir_key

    causal.answer(QUESTION, DOCS[:1], max_new_tokens=NEW_TOKENS)
    result = bidir.answer(QUESTION, DOCS[:1], max_new_tokens=NEW_TOKENS)
    assert result.reused_tokens > 0 and result.reuse.fallback is None
    a, b = causal._rag.store.get(causal_key), bidir._rag.store.get(bidir_key)
    assert b.meta["capture"] == "bidirectional"
    # layer 0 sees only embeddings: equal; deeper layers saw the whole document: different
    assert torch.allclose(a.keys[0], b.keys[0], atol=1e-6)
    assert torch.allclose(a.values[0], b.values[0], atol=1e-6)
    assert max_diff(a.values[-1], b.values[-1]) > 1e-4
    # the prefix is captured causally either way
    pa = causal._rag.store.get(causal._rag.reuser.key(plan.prefix, None))
    pb = bidir._rag.store.get(bidir._rag.reuser.key(plan.prefix, None))
    assert all(torch.allclose(x, y, atol=1e-6) for x, y in zip(pa.values, pb.values, strict=True))


def test_default_capture_is_causal_even_with_bidirectional_embeddings(tiny_llama_dir):
    for kwargs in (
        {},
        {"attention": "bidirectional"},
        {"attention": "causal"},
        {"attention": "bidirectional", "cache_capture": "causal"},
    ):
        m = load(tiny_llama_dir, **kwargs)
        plan = m._rag.plan(QUESTION, DOCS[:1])
        assert m._rag.reuser.key(plan.documents[0], plan.prefix).capture == "causal", kwargs


# --- prefill: every live token and the question in one forward, the first token from it ------------
@pytest.mark.parametrize("arch", ["llama", "qwen2", "mistral"])
def test_prefill_gives_the_first_token_logits_of_a_full_prefill(tiny_model_dirs, arch):
    m = load(tiny_model_dirs[arch])
    plan = m._rag.plan(QUESTION, DOCS[:1])
    cache, logits, stats = m._rag.reuser.prefill(plan, m.model)
    assert max_diff(logits[0].float(), full_logits(m, plan.token_ids)) <= 1e-4
    assert cache.get_seq_length() == len(plan.token_ids)  # the whole prompt, question included
    assert stats.reused_tokens + stats.prefilled_tokens == len(plan.token_ids)
    # each part is timed, inside the whole (what benchmarks read instead of patching the engine)
    assert stats.fetch_s > 0 and stats.splice_s > 0 and stats.forward_s > 0
    assert stats.fetch_s + stats.splice_s + stats.forward_s <= stats.build_s
    timings = stats.summary()["timings_ms"]
    assert set(timings) == {"build", "fetch", "splice", "forward"}
    assert timings["forward"] == round(1e3 * stats.forward_s, 3)


@pytest.mark.parametrize("arch", ["llama", "qwen2", "mistral"])
@pytest.mark.parametrize("recompute", [0, 3])
def test_separators_folded_into_the_question_forward_keep_the_block_attention_result(
    tiny_model_dirs, arch, recompute
):
    m = load(tiny_model_dirs[arch])
    plan = m._rag.plan(QUESTION, DOCS)
    assert sum(not s.cached for s in plan.segments[:-1]) == 2  # two live separators
    _, logits, stats = m._rag.reuser.prefill(plan, m.model, recompute_tokens=recompute)
    assert max_diff(logits[0].float(), block_attention_logits(m, plan, recompute_tokens=recompute)) <= 1e-4
    assert stats.reused_tokens + stats.prefilled_tokens == len(plan.token_ids)


def test_a_warm_answer_runs_one_forward_and_no_generate(tiny_llama_dir, monkeypatch):
    m = load(tiny_llama_dir)
    m.index(DOCS)
    want = m.answer(QUESTION, DOCS, max_new_tokens=1).text
    calls = []
    hook = m._rag.reuser.body.register_forward_pre_hook(lambda module, args: calls.append(args))

    def no_generate(*args, **kwargs):
        raise AssertionError("the reuse path must not call generate")

    monkeypatch.setattr(m.model, "generate", no_generate)
    try:
        result = m.answer(QUESTION, DOCS, max_new_tokens=1)
    finally:
        hook.remove()
    assert result.text == want and result.completion_tokens == 1
    assert len(calls) == 1  # separators + question + first token: one forward of the body
    assert result.reuse.hits == len(DOCS) + 1 and result.ttft_s is not None


@pytest.mark.parametrize("arch", ["llama", "qwen2", "mistral"])
def test_reused_answers_stream_and_stop_like_full_prefill(tiny_model_dirs, arch):
    m = load(tiny_model_dirs[arch])
    full = m.answer(QUESTION, DOCS[:1], max_new_tokens=24, reuse_cache=False)
    reused = m.answer(QUESTION, DOCS[:1], max_new_tokens=24)
    assert (reused.text, reused.completion_tokens, reused.finish_reason) == (
        full.text,
        full.completion_tokens,
        full.finish_reason,
    )
    stop = next(
        full.text[i : i + 2]
        for i in range(2, len(full.text) - 2)
        if full.text[i : i + 2].isascii() and full.text.find(full.text[i : i + 2]) == i
    )
    cut = m.answer(QUESTION, DOCS[:1], max_new_tokens=24, stop=[stop], reuse_cache=False)
    pieces = list(m.answer(QUESTION, DOCS[:1], max_new_tokens=24, stop=[stop], stream=True))
    assert "".join(pieces) == cut.text and stop not in cut.text and full.text.startswith(cut.text)
    sampled = []
    for reuse in (False, True):  # the same draws from the same distribution (generate's processors)
        torch.manual_seed(7)
        sampled.append(m.answer(QUESTION, DOCS[:1], max_new_tokens=12, temperature=0.8, reuse_cache=reuse))
    assert sampled[0].text == sampled[1].text and sampled[0].text != full.text[: len(sampled[0].text)]


def test_the_reuse_prefill_waits_for_the_generation_slot(tiny_llama_dir):
    from egtlm_core.generation.limit import generation_limit, set_generation_limit

    m = load(tiny_llama_dir)
    m.index(DOCS)
    limit = generation_limit("cpu")
    before = limit.limit
    set_generation_limit(1)
    calls, results = [], []
    hook = m._rag.reuser.body.register_forward_pre_hook(lambda module, args: calls.append(1))
    try:
        limit.acquire()  # another generation holds the one slot
        try:
            worker = threading.Thread(
                target=lambda: results.append(m.answer(QUESTION, DOCS, max_new_tokens=2))
            )
            worker.start()
            time.sleep(0.5)
            assert calls == [] and limit.queued == 1  # the prefill forward waits in the queue
        finally:
            limit.release()
        worker.join(timeout=60)
    finally:
        hook.remove()
        set_generation_limit(before)
    assert results and results[0].completion_tokens > 0 and len(calls) >= 1
