"""Pointwise reranking: P("yes") and the query likelihood against independent computations, batch
invariance under left padding, ordering, options; one end-to-end case on the default model."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from egtlm_core import EgtLM
from egtlm_core.rerank import PointwiseReranker, QueryLikelihoodPrompt, RerankPrompt

QUERY = "What is the capital of France?"
DOCS = [
    "Paris is the capital of France. Berlin is the capital of Germany.",
    "fox",
    "The quick brown fox jumps over the lazy dog while a cat sat on the mat by the fire.",
    {"title": "Numbers", "text": "Numbers like 12345 and words like don't."},
]


@pytest.fixture(scope="module")
def lm(tiny_llama_dir) -> EgtLM:
    return EgtLM(str(tiny_llama_dir), torch_dtype="float32")


def plain(doc) -> str:
    return doc if isinstance(doc, str) else f"{doc['title']} {doc['text']}"


def full_logprobs(lm: EgtLM, text: str) -> torch.Tensor:
    """log p(next token) at every position of one unpadded chat prompt + continuation."""
    ids = torch.tensor([lm.tokenizer(text, add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        return torch.log_softmax(lm.model(input_ids=ids).logits[0].double(), dim=-1)


def chat_text(lm: EgtLM, user: str) -> str:
    messages = [{"role": "user", "content": user}]
    return lm.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def test_yes_no_score_is_p_yes_over_p_yes_plus_p_no(lm):
    prompt = RerankPrompt()
    got = PointwiseReranker(lm.model, lm.tokenizer, prompt).score(QUERY, DOCS)
    vocab = lm.tokenizer.get_vocab()
    first = {w: lm.tokenizer(w, add_special_tokens=False)["input_ids"][0] for w in ("yes", "Yes", "no", "No")}
    assert all(i < len(vocab) for i in first.values())
    for doc, score in zip(DOCS, got, strict=True):
        text = chat_text(lm, prompt.template.format(query=QUERY, document=plain(doc)))
        p = full_logprobs(lm, text)[-1].exp()
        yes = sum(p[i] for i in {first["yes"], first["Yes"]})
        no = sum(p[i] for i in {first["no"], first["No"]})
        assert score == pytest.approx(float(yes / (yes + no)), abs=1e-5)


def test_query_likelihood_is_the_geometric_mean_token_probability(lm):
    prompt = QueryLikelihoodPrompt()
    got = PointwiseReranker(lm.model, lm.tokenizer, prompt).score(QUERY, DOCS)
    query_ids = lm.tokenizer(QUERY, add_special_tokens=False)["input_ids"]
    for doc, score in zip(DOCS, got, strict=True):
        head = chat_text(lm, prompt.template.format(document=plain(doc)))
        n_head = len(lm.tokenizer(head, add_special_tokens=False)["input_ids"])
        logp = full_logprobs(lm, head + QUERY)
        picked = [float(logp[n_head - 1 + j, t]) for j, t in enumerate(query_ids)]
        assert score == pytest.approx(math.exp(sum(picked) / len(picked)), rel=1e-5)


@pytest.mark.parametrize("prompt", [RerankPrompt(), QueryLikelihoodPrompt()], ids=["yes_no", "ql"])
def test_batched_equals_one_by_one(lm, prompt):
    batched = PointwiseReranker(lm.model, lm.tokenizer, prompt, batch_size=4).score(QUERY, DOCS)
    alone = [
        PointwiseReranker(lm.model, lm.tokenizer, prompt, batch_size=1).score(QUERY, [d])[0] for d in DOCS
    ]
    np.testing.assert_allclose(batched, alone, atol=1e-6)


def test_rerank_orders_best_first_and_keeps_top_n(lm):
    scores = PointwiseReranker(lm.model, lm.tokenizer).score(QUERY, DOCS)
    ranked = lm.rerank(QUERY, DOCS)
    assert [r.index for r in ranked] == list(np.argsort(-scores, kind="stable"))
    assert [r.score for r in ranked] == sorted(scores, reverse=True)
    assert all(r.document is DOCS[r.index] for r in ranked)
    assert [r.index for r in lm.rerank(QUERY, DOCS, top_n=2)] == [r.index for r in ranked[:2]]
    assert lm.rerank(QUERY, []) == []


def test_documents_are_cut_to_max_document_tokens(lm):
    long = " ".join(["fox"] * 200)
    short = PointwiseReranker(lm.model, lm.tokenizer, max_document_tokens=5)
    assert len(short._prompts(QUERY, [long])[0]) < len(
        PointwiseReranker(lm.model, lm.tokenizer)._prompts(QUERY, [long])[0]
    )
    assert short.score(QUERY, [long])[0] == pytest.approx(
        short.score(QUERY, [" ".join(["fox"] * 5)])[0], abs=1e-6
    )


def test_a_custom_prompt_changes_scores(lm):
    default = lm.rerank(QUERY, DOCS)
    other = lm.rerank(QUERY, DOCS, prompt=RerankPrompt(system="Judge relevance.", yes=("yes",), no=("no",)))
    assert {r.index: r.score for r in default} != {r.index: r.score for r in other}


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: RerankPrompt(template="{query} only"), "needs {query} and {document}"),
        (lambda: RerankPrompt(yes=()), "at least one"),
        (lambda: QueryLikelihoodPrompt(template="{query} {document}"), "no {query}"),
    ],
)
def test_bad_prompts_are_refused(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_bad_calls_are_refused(lm):
    with pytest.raises(ValueError, match="share a first token"):
        PointwiseReranker(lm.model, lm.tokenizer, RerankPrompt(yes=("yes",), no=("yes",)))
    with pytest.raises(ValueError, match="top_n"):
        lm.rerank(QUERY, DOCS, top_n=0)
    with pytest.raises(ValueError, match="query"):
        lm.rerank("  ", DOCS)
    with pytest.raises(ValueError, match="batch_size"):
        lm.rerank(QUERY, DOCS, batch_size=0)


@pytest.mark.slow
def test_default_model_puts_the_answering_document_first():
    lm = EgtLM(torch_dtype="float32")
    docs = ["The stock market fell today.", "Vaccines train the immune system to recognise a pathogen."]
    ranked = lm.rerank("How do vaccines work?", docs, prompt=QueryLikelihoodPrompt())
    assert ranked[0].index == 1 and ranked[0].score > ranked[1].score
    assert all(0.0 <= r.score <= 1.0 for r in lm.rerank("How do vaccines work?", docs))
