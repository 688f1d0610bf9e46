"""The training passes: the reuse layout's block mask, RAG samples, assistant-only chat labels."""

from __future__ import annotations

from pathlib import Path

import torch

from egtlm_core import EgtLM
from egtlm_core.rag.segment_plan import rag_layout
from egtlm_core.training import RAGRow
from egtlm_core.training.losses import IGNORE
from egtlm_core.training.passes import block_groups, block_logits, block_mask, chat_labels, rag_sample

DOCS = ("The quick brown fox jumps over the lazy dog.", "Paris is the capital of France.")


def test_block_mask_is_reuse_attention() -> None:
    groups = [0, 0, 1, 1, 2, 2, 2, -1, -1]  # prefix, document 1, document 2, question + answer
    allowed = block_mask(groups, torch.float32)[0, 0] == 0
    for i, gi in enumerate(groups):
        for j, gj in enumerate(groups):
            if j > i:
                want = False  # causal
            elif gi >= 1:
                want = (
                    gj == 0 or gj == gi
                )  # a document sees the prefix and itself, as its captured states did
            else:
                want = True  # the prefix and live tokens see everything before them
            assert bool(allowed[i, j]) == want, (i, j)


def test_rag_sample_is_the_reuse_prompt_then_the_answer(tiny_llama_dir: Path) -> None:
    lm = EgtLM(str(tiny_llama_dir), torch_dtype="float32")
    ids, groups, start = rag_sample(lm, RAGRow("What is the capital of France?", DOCS, "Paris"))
    plan = rag_layout(lm.tokenizer, "What is the capital of France?", list(DOCS))
    assert ids[:start] == plan.token_ids and groups[:start] == block_groups(plan)
    answer = lm.tokenizer.decode(ids[start:])
    assert answer == "Paris" + lm.tokenizer.eos_token and set(groups[start:]) == {-1}
    seen = [g for i, g in enumerate(groups) if i == 0 or g != groups[i - 1]]
    assert seen == [0, 1, -1, 2, -1]  # prefix, doc 1, separator, doc 2, question and answer


def test_one_document_in_block_mode_is_the_full_prefill(tiny_llama_dir: Path) -> None:
    """After the prefix, a single document sees exactly what it sees in a full prefill, so the block
    student and the causal teacher agree there; with two documents they differ."""
    lm = EgtLM(str(tiny_llama_dir), torch_dtype="float32")
    one = rag_sample(lm, RAGRow("What is the capital of France?", DOCS[1:], "Paris"))
    two = rag_sample(lm, RAGRow("What is the capital of France?", DOCS, "Paris"))
    with torch.no_grad():
        for (ids, groups, _), same in ((one, True), (two, False)):
            n = len(ids)
            full, block = block_logits(lm.model, ids, None, n), block_logits(lm.model, ids, groups, n)
            assert torch.allclose(full, block, atol=1e-5) == same


def test_chat_labels_keep_only_the_assistant_turns(tiny_llama_dir: Path) -> None:
    tok = EgtLM(str(tiny_llama_dir), torch_dtype="float32").tokenizer
    messages = [
        {"role": "user", "content": "capital of France?"},
        {"role": "assistant", "content": "Paris"},
        {"role": "user", "content": "and Germany?"},
        {"role": "assistant", "content": "Berlin"},
    ]
    ids, labels = chat_labels(tok, messages, max_length=512)
    assert len(ids) == len(labels)
    kept = tok.decode([t for t in labels if t != IGNORE])
    assert kept.split() == ["Paris", "Berlin"]  # each answer (and the template's newline after it)
    assert tok.decode(ids).count("capital of France?") == 1
