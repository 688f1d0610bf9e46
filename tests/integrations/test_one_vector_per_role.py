"""One definition per role: every adapter returns `EgtLM.encode`'s vectors for the same text and role.

A text's vector is `EgtLM().encode(text)` (the symmetric document side) and a query's is
`encode(text, prompt_name="query")`, whichever framework asks; the server is checked in
tests/unit/server/test_openai_clients.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from egtlm_core import EgtLM

TEXTS = ["Paris is the capital of France.", "The quick brown fox jumps.", "A cat sat on the mat."]
QUERY = "What is the capital of France?"
FLOAT32 = {"torch_dtype": "float32"}


def _adapters(path: str) -> dict[str, tuple]:
    """(embed texts, embed a query) of each adapter over the same model source."""
    from chromadb_egtlm import EgtLMEmbeddingFunction
    from langchain_egtlm import EgtLMEmbeddings
    from llama_index.embeddings.egtlm import EgtLMEmbedding
    from sentence_transformers_egtlm import to_sentence_transformer

    lc = EgtLMEmbeddings(model=path, model_kwargs=FLOAT32)
    li = EgtLMEmbedding(path, model_kwargs=FLOAT32)
    chroma = EgtLMEmbeddingFunction(path, model_kwargs=FLOAT32)
    st = to_sentence_transformer(path, model_kwargs=FLOAT32)
    return {
        "langchain": (lc.embed_documents, lc.embed_query),
        "llamaindex": (li.get_text_embedding_batch, li.get_query_embedding),
        "chroma": (chroma, lambda q: chroma.embed_query([q])[0]),
        "sentence-transformers": (st.encode, st.encode_query),
    }


@pytest.mark.parametrize("settings", [{}, {"document_context": "rag"}], ids=["instruction", "rag"])
def test_every_adapter_gives_encode_s_vector_per_role(tiny_llama_dir, tmp_path, settings) -> None:
    import json
    import shutil

    path = tmp_path / "model"
    shutil.copytree(tiny_llama_dir, path)
    if settings:  # saved settings, as a trained adapter carries them (`egtlm_config.json`)
        (path / "egtlm_config.json").write_text(json.dumps(settings), encoding="utf-8")
    lm = EgtLM(str(path), **FLOAT32)
    assert lm.config.document_context == settings.get("document_context", "instruction")
    texts, query = lm.encode(TEXTS), lm.encode(QUERY, prompt_name="query")
    assert not np.allclose(texts[0], lm.encode(TEXTS[0], prompt_name="query"))  # two distinct roles
    for name, (embed_texts, embed_query) in _adapters(str(path)).items():
        np.testing.assert_allclose(np.asarray(embed_texts(TEXTS)), texts, atol=1e-5, err_msg=name)
        np.testing.assert_allclose(np.asarray(embed_query(QUERY)), query, atol=1e-5, err_msg=name)
