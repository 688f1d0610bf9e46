"""The packaged default model (SmolLM2-135M-Instruct) as a SentenceTransformer, end to end, in float32:
the same vectors as `EgtLM.encode` before and after save -> reload, and none of ST's chat wrapping."""

from __future__ import annotations

import numpy as np
import pytest
from sentence_transformers import SentenceTransformer
from sentence_transformers_egtlm import to_sentence_transformer

from egtlm_core import EgtLM, default_model_dir

pytestmark = pytest.mark.slow
FLOAT32 = {"torch_dtype": "float32"}
SENTENCES = [
    "A man is playing a guitar.",
    "Someone is playing an instrument.",
    "The stock market fell sharply.",
]


def test_default_model_save_reload_same_vectors(tmp_path):
    lm = EgtLM(**FLOAT32)
    st = to_sentence_transformer(lm)
    plain, queries = st.encode(SENTENCES), st.encode_query(SENTENCES)
    assert np.abs(plain - lm.encode(SENTENCES)).max() <= 1e-5
    assert np.abs(queries - lm.encode_queries(SENTENCES)).max() <= 1e-5
    # the shipped adapter embeds documents after the RAG head (document_context="rag"): so does ST
    assert np.abs(st.encode_document(SENTENCES) - lm.encode_documents(SENTENCES)).max() <= 1e-5
    assert float(plain[0] @ plain[1]) > float(plain[0] @ plain[2])  # paraphrase above unrelated

    st.save(str(tmp_path / "st"))
    again = SentenceTransformer(str(tmp_path / "st"), trust_remote_code=True, model_kwargs=FLOAT32)
    assert np.abs(again.encode(SENTENCES) - lm.encode(SENTENCES)).max() <= 1e-5
    assert np.abs(again.encode_query(SENTENCES) - lm.encode_queries(SENTENCES)).max() <= 1e-5
    assert np.abs(again.encode_document(SENTENCES) - lm.encode_documents(SENTENCES)).max() <= 1e-5


def test_default_model_tokens_are_egtlms_not_the_chat_template():
    lm = EgtLM(**FLOAT32)
    ours = to_sentence_transformer(lm).preprocess(SENTENCES)["attention_mask"].sum().item()
    stock = SentenceTransformer(str(default_model_dir()), device="cpu")
    theirs = stock.preprocess(SENTENCES)["attention_mask"].sum().item()
    assert ours == sum(len(ids) for ids in lm.tokenizer(SENTENCES)["input_ids"])
    assert theirs > 2.5 * ours  # ST wraps each sentence in the template with its system prompt
