"""document_context="rag": documents embedded after the RAG head, as their states are captured."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from egtlm_core import EgtLM, EgtLMConfig
from egtlm_core.embedding.encoding import TokenizedText, shared_prefix_length
from egtlm_core.training.passes import embed

DOCS = [
    "The quick brown fox jumps over the lazy dog.",
    "Paris is the capital of France.",
    "Water boils at one hundred degrees.",
]


def _rag_lm(directory: Path, **kwargs: object) -> EgtLM:
    return EgtLM(str(directory), torch_dtype="float32", document_context="rag", **kwargs)


def test_rag_context_needs_causal_attention_and_no_eos() -> None:
    with pytest.raises(ValueError, match="attention='causal'"):
        EgtLMConfig(document_context="rag", attention="bidirectional")
    with pytest.raises(ValueError, match="no embed_eos"):
        EgtLMConfig(document_context="rag", embed_eos="</s>")
    with pytest.raises(ValueError, match="document_context"):
        EgtLMConfig(document_context="prompt")


def test_document_tokens_are_the_capture_tokens(tiny_llama_dir: Path) -> None:
    lm = _rag_lm(tiny_llama_dir)
    head = list(lm._rag.default_prefix().token_ids)
    for doc, item in zip(DOCS, lm.document_inputs(DOCS), strict=True):
        alone = lm.tokenizer(doc, add_special_tokens=False)["input_ids"]
        assert item.ids == head + alone and item.content_start == len(head)


def test_rag_document_vector_is_a_reference_pooling_of_the_head_pass(tiny_llama_dir: Path) -> None:
    lm = _rag_lm(tiny_llama_dir)
    head = list(lm._rag.default_prefix().token_ids)
    doc = DOCS[1]
    ids = head + lm.tokenizer(doc, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        hidden = lm._loaded.body(input_ids=torch.tensor([ids])).last_hidden_state[0].float()
    states = hidden[len(head) :]
    weights = torch.arange(1, len(states) + 1, dtype=torch.float32)[:, None]  # weighted mean: i-th weighs i
    want = (states * weights).sum(0) / weights.sum()
    want = (want / want.norm()).numpy()
    got = lm.encode_documents(doc)
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert not np.allclose(got, EgtLM(str(tiny_llama_dir), torch_dtype="float32").encode_documents(doc))


def test_rag_documents_truncate_with_a_warning_counting_document_tokens(tiny_llama_dir: Path) -> None:
    lm = _rag_lm(tiny_llama_dir)
    with pytest.warns(UserWarning, match="truncated"):
        short = lm.encode_documents(DOCS[0], max_length=4)
    head = len(lm._rag.default_prefix().token_ids)
    assert [len(it.ids) - head for it in lm.document_inputs([DOCS[0]], max_length=4)] == [4]
    assert short.shape == (lm.embedding_dim,)
    with pytest.raises(TypeError, match="custom instruction"):
        lm.encode_documents(DOCS, instruction="x")


def test_shared_prefix_length() -> None:
    a = TokenizedText([1, 2, 3, 4, 5], 3)
    b = TokenizedText([1, 2, 3, 9], 3)
    c = TokenizedText([1, 2, 7, 9], 3)
    assert shared_prefix_length([a, b]) == 3
    assert shared_prefix_length([a, b, c]) == 2
    assert shared_prefix_length([TokenizedText([1, 2], 2), a]) == 1  # every row keeps a token to run


@pytest.mark.parametrize("context", ["instruction", "rag"])
def test_training_vectors_with_a_shared_head_equal_encode(tiny_llama_dir: Path, context: str) -> None:
    """The head every row shares runs once in training (autograd on); vectors stay encode's."""
    lm = EgtLM(str(tiny_llama_dir), torch_dtype="float32", document_context=context)
    trained = embed(lm, DOCS, "document", max_length=64)
    queries = embed(lm, DOCS, "query", max_length=64)
    np.testing.assert_allclose(trained.detach().numpy(), lm.encode_documents(DOCS), atol=1e-5)
    np.testing.assert_allclose(queries.detach().numpy(), lm.encode_queries(DOCS), atol=1e-5)


def test_gradients_reach_the_shared_head(tiny_llama_dir: Path, tmp_path: Path) -> None:
    private = tmp_path / "model"  # its own weights: other tests may have frozen the shared copy's
    shutil.copytree(tiny_llama_dir, private)
    lm = _rag_lm(private)
    head = lm._rag.default_prefix().token_ids
    table = lm._loaded.body.get_input_embeddings().weight
    table.requires_grad_(True)
    embed(lm, DOCS, "document", max_length=64).sum().backward()
    only_in_head = sorted(
        set(head) - {t for d in DOCS for t in lm.tokenizer(d, add_special_tokens=False)["input_ids"]}
    )
    assert only_in_head and table.grad is not None
    assert table.grad[only_in_head].abs().sum() > 0  # the head ran once, and still learns
