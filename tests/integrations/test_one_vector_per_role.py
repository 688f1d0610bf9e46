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


# Every setting in `EgtLMConfig.VECTOR_FIELDS` away from its default in one of the two sets.
ALL_VECTOR_SETTINGS = [
    {
        "pooling": "mean",
        "attention": "causal",
        "normalize": False,
        "embed_eos": "",
        "prompt_format": "custom",
        "prompt_template": "<task>{instruction}</task> ",
        "query_instruction": "Find the fox",
        "document_instruction": "Represent the passage",
        "document_context": "rag",
        "max_length": 40,
    },
    {
        "pooling": "last",
        "attention": "bidirectional",
        "normalize": True,
        "embed_eos": "</s>",
        "prompt_format": "e5",
        "prompt_template": None,
        "query_instruction": "Find the fox",
        "document_instruction": "Represent the passage",
        "document_context": "instruction",
        "max_length": 40,
    },
]


@pytest.mark.parametrize("settings", ALL_VECTOR_SETTINGS, ids=["rag-custom", "instruction-e5"])
def test_every_adapter_takes_every_vector_field(tiny_llama_dir, settings) -> None:
    """The core's one list of vector-defining settings reaches the model through every adapter."""
    from chromadb_egtlm import EgtLMEmbeddingFunction
    from langchain_egtlm import EgtLMEmbeddings
    from llama_index.embeddings.egtlm import EgtLMEmbedding
    from sentence_transformers_egtlm import to_sentence_transformer

    from egtlm_core import EgtLMConfig

    assert list(settings) == list(EgtLMConfig.VECTOR_FIELDS)
    path = str(tiny_llama_dir)
    texts = [*TEXTS, "The quick brown fox jumps over the lazy dog. " * 5]  # longer than max_length
    lm = EgtLM(path, **FLOAT32, **settings)
    with pytest.warns(UserWarning, match="truncated"):
        documents, query = lm.encode_documents(texts), lm.encode_queries(QUERY)
    lc = EgtLMEmbeddings(model=path, model_kwargs=FLOAT32, **settings)
    li_settings = {("text_instruction" if k == "document_instruction" else k): v for k, v in settings.items()}
    li = EgtLMEmbedding(path, model_kwargs=FLOAT32, **li_settings)
    chroma = EgtLMEmbeddingFunction(path, model_kwargs=FLOAT32, **settings)
    st = to_sentence_transformer(path, model_kwargs=FLOAT32, **settings)
    adapters = {
        "langchain": (lc.embed_documents, lc.embed_query),
        "llamaindex": (li.get_text_embedding_batch, li.get_query_embedding),
        "chroma": (chroma, lambda q: chroma.embed_query([q])[0]),
        "sentence-transformers": (st.encode_document, st.encode_query),
    }
    for name, (embed_documents, embed_query) in adapters.items():
        with pytest.warns(UserWarning, match="truncated"):
            got = np.asarray(embed_documents(texts))
        np.testing.assert_allclose(got, documents, atol=1e-5, err_msg=name)
        np.testing.assert_allclose(np.asarray(embed_query(QUERY)), query, atol=1e-5, err_msg=name)
