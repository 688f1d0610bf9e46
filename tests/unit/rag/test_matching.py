"""Documents found in a finished prompt (`egtlm_core.rag.matching`): only whole, token-aligned, long ones.

Every plan must cut the prompt's own tokenization, so reuse and a full prefill see the same ids.
"""

from __future__ import annotations

import pytest
from tiny_models import build_tokenizer

from egtlm_core.rag.matching import KnownDocument, plan_from_prompt

LONG_A = "Retrieval augmented generation reads documents before answering questions."
LONG_B = "Paris is the capital of France. Berlin is the capital of Germany."


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer()


def known(tok, *texts: str) -> list[KnownDocument]:
    return [KnownDocument(t, tuple(tok(t, add_special_tokens=False)["input_ids"])) for t in texts]


def check_plan(tok, prompt: str, docs: list[KnownDocument], **kw) -> list[str]:
    """Plan `prompt`; assert it cuts the prompt's own ids; -> the texts of the cached documents."""
    plan = plan_from_prompt(tok, prompt, docs, **kw)
    assert plan.token_ids == tok(prompt, add_special_tokens=False)["input_ids"]
    by_text = {d.text: d.token_ids for d in docs}
    for segment in plan.documents:
        assert segment.token_ids == by_text[segment.text]  # what the stored states were computed from
    assert not plan.segments[-1].cached
    return [s.text for s in plan.documents]


def test_long_documents_are_found_and_the_head_is_the_prefix(tok):
    prompt = f"<|user|>\nContext:\n{LONG_A}\n\n{LONG_B}\n\nQuestion: what is a fox?\n<|assistant|>\n"
    assert check_plan(tok, prompt, known(tok, LONG_A, LONG_B)) == [LONG_A, LONG_B]
    plan = plan_from_prompt(tok, prompt, known(tok, LONG_A, LONG_B))
    assert plan.prefix is not None and plan.prefix.text == "<|user|>\nContext:\n"


def test_short_known_texts_never_cut_words_or_role_headers(tok):
    # The old substring search cut "con|cat|enate" and the "<|user|>" header into pieces.
    prompt = "<|user|>\nHow do I concatenate strings in Python? The cat sat.\n<|assistant|>\n"
    short = known(tok, "cat", "user", "Python")
    assert all(len(d.token_ids) < 16 for d in short)
    assert check_plan(tok, prompt, short) == []
    assert len(plan_from_prompt(tok, prompt, short).segments) == 1


def test_a_document_starting_inside_a_token_is_not_matched(tok):
    # Splicing a document whose span starts mid-token would change the prompt's token ids.
    prompt = f"Docs:\n{LONG_B}\nQ?"
    offsets = tok(prompt, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    start = prompt.index(LONG_B)
    lo, hi = next((a, b) for a, b in offsets if a > start and b - a >= 2)  # a multi-character token
    inner = prompt[lo + 1 : start + len(LONG_B)]  # begins inside that token
    assert len(tok(inner, add_special_tokens=False)["input_ids"]) >= 16
    assert check_plan(tok, prompt, known(tok, inner)) == []
    assert check_plan(tok, prompt, known(tok, LONG_B)) == [LONG_B]


def test_tokens_must_equal_the_stored_tokens(tok):
    stale = KnownDocument(LONG_A, (1, 2, 3) * 8)  # same text, other tokens: never spliced
    assert check_plan(tok, f"Docs:\n{LONG_A}\nQ?", [stale]) == []


def test_a_document_containing_another_wins_and_both_can_appear(tok):
    outer = f"{LONG_B} {LONG_A}"
    docs = known(tok, LONG_A, outer)
    assert check_plan(tok, f"Docs:\n{outer}\nQ?", docs) == [outer]
    assert check_plan(tok, f"Docs:\n{outer}\n\n{LONG_A}\nQ?", docs) == [outer, LONG_A]


def test_repeated_documents_are_each_spliced(tok):
    prompt = f"Docs:\n{LONG_A}\n\n{LONG_A}\n\nQ?"
    assert check_plan(tok, prompt, known(tok, LONG_A)) == [LONG_A, LONG_A]


def test_unicode_documents(tok):
    doc = "Café Zürich — 東京 and München, naïve façade: ünïcödé everywhere in this text, ß and æ."
    assert check_plan(tok, f"Docs:\n{doc}\n\nQ: wo?", known(tok, doc)) == [doc]
    # A document that starts inside a multi-byte character's tokens cannot match.
    assert check_plan(tok, f"Docs:\n{doc[1:]}\n\nQ?", known(tok, doc)) == []


def test_a_document_at_the_very_end_stays_live(tok):
    prompt = f"Docs:\n{LONG_A}\n\n{LONG_B}"
    assert check_plan(tok, prompt, known(tok, LONG_A, LONG_B)) == [LONG_A]
    assert check_plan(tok, LONG_B, known(tok, LONG_B)) == []  # the whole prompt is the document


def test_min_tokens_is_configurable(tok):
    mid = "The quick brown fox jumps over the lazy dog."
    n = len(tok(mid, add_special_tokens=False)["input_ids"])
    prompt = f"Docs:\n{mid}\nQ?"
    assert check_plan(tok, prompt, known(tok, mid), min_tokens=n + 1) == []
    assert check_plan(tok, prompt, known(tok, mid), min_tokens=n) == [mid]
