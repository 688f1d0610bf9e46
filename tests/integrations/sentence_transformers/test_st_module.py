"""`EgtLMEncoder` / `to_sentence_transformer` on tiny random models: the vectors equal `EgtLM.encode`'s
for every setting, prompts stay out of pooling, no chat template, save -> reload gives the same vectors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.base.modules import Normalize
from sentence_transformers_egtlm import EgtLMEncoder, to_sentence_transformer

from egtlm_core import EgtLM

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Paris is the capital of France.",
    "A cat sat.",
    "Retrieval augmented generation reads documents before answering questions.",
]
FLOAT32 = {"torch_dtype": "float32"}
TOL = 1e-5


def lm_for(path, **config) -> EgtLM:
    return EgtLM(str(path), torch_dtype="float32", **config)


@pytest.mark.parametrize(
    "config",
    [
        {},
        {"pooling": "mean"},
        {"pooling": "last"},  # the last text token, as EgtLM.encode pools it
        {"pooling": "last", "prompt_format": "e5"},  # EOS appended, as EgtLM.encode does
        {"pooling": "cls"},
        {"attention": "bidirectional", "pooling": "mean"},
        {"normalize": False},
        {"padding_side": "left", "pooling": "mean"},
    ],
)
def test_encode_query_document_equal_egtlm(tiny_llama_dir, config):
    lm = lm_for(tiny_llama_dir, **config)
    st = to_sentence_transformer(lm)
    assert np.abs(st.encode(TEXTS, batch_size=3) - lm.encode(TEXTS)).max() <= TOL
    assert np.abs(st.encode_query(TEXTS) - lm.encode_queries(TEXTS)).max() <= TOL
    assert np.abs(st.encode_document(TEXTS) - lm.encode_documents(TEXTS)).max() <= TOL
    assert (Normalize in {type(m) for m in st}) == lm.config.normalize


@pytest.mark.parametrize("arch", ["qwen2", "mistral"])
def test_other_architectures(tiny_model_dirs, arch):
    lm = lm_for(tiny_model_dirs[arch])
    st = to_sentence_transformer(lm)
    assert np.abs(st.encode_query(TEXTS) - lm.encode_queries(TEXTS)).max() <= TOL


def test_prompt_tokens_take_part_in_attention_not_in_pooling(tiny_llama_dir):
    """Recomputed by hand: mean over the text's tokens only, after a forward over prompt + text."""
    lm = lm_for(tiny_llama_dir, pooling="mean", normalize=False)
    st = to_sentence_transformer(lm)
    prompt, text = st.prompts["query"], TEXTS[0]
    enc = lm.tokenizer(prompt + text, return_offsets_mapping=True)
    first = next(i for i, (_, end) in enumerate(enc["offset_mapping"]) if end > len(prompt))
    assert 0 < first < len(enc["input_ids"])
    with torch.inference_mode():
        hidden = lm.model.base_model(input_ids=torch.tensor([enc["input_ids"]])).last_hidden_state[0]
    expected = hidden[first:].mean(dim=0).numpy()
    got = st.encode_query(text)
    assert np.abs(got - expected).max() <= TOL
    with_prompt_pooled = hidden.mean(dim=0).numpy()
    assert np.abs(got - with_prompt_pooled).max() > 1e-3  # pooling the prompt would differ


def test_plain_text_is_not_wrapped_in_the_chat_template(tiny_llama_dir):
    """Stock sentence-transformers wraps a chat-template model's text; this module embeds the text."""
    lm = lm_for(tiny_llama_dir)
    assert lm.tokenizer.chat_template
    ours = to_sentence_transformer(lm).preprocess(["a cat sat"])["input_ids"][0].tolist()
    assert ours == lm.tokenizer("a cat sat")["input_ids"]
    stock = SentenceTransformer(str(tiny_llama_dir), device="cpu")
    stock_ids = stock.preprocess(["a cat sat"])["input_ids"][0].tolist()
    assert "<|user|>" in lm.tokenizer.decode(stock_ids) and len(stock_ids) > len(ours)


def test_truncate_dim_and_prompt_name(tiny_llama_dir):
    lm = lm_for(tiny_llama_dir)
    st = to_sentence_transformer(lm, truncate_dim=None)
    cut = st.encode(TEXTS, truncate_dim=16, normalize_embeddings=True)
    assert cut.shape == (4, 16) and np.abs(cut - lm.encode(TEXTS, dim=16)).max() <= TOL
    assert np.abs(st.encode(TEXTS, prompt_name="query") - lm.encode_queries(TEXTS)).max() <= TOL
    instruction = "<|user|>\nFind similar sentences\n<|embed|>\n"
    assert (
        np.abs(st.encode(TEXTS, prompt=instruction) - lm.encode(TEXTS, instruction=instruction)).max() <= TOL
    )
    small = to_sentence_transformer(lm, truncate_dim=8)
    assert small.get_embedding_dimension() == 8 and small.encode(TEXTS).shape == (4, 8)
    with pytest.raises(ValueError, match="Prompt name 'nope' not found"):
        st.encode(TEXTS, prompt_name="nope")


def test_custom_instructions_become_the_saved_prompts(tiny_llama_dir, tmp_path):
    st = to_sentence_transformer(
        str(tiny_llama_dir), model_kwargs=FLOAT32, query_instruction="Find the claim", prompt_format="e5"
    )
    assert st.prompts == {"query": "Instruct: Find the claim\nQuery: ", "document": ""}
    st.save(str(tmp_path / "st"))
    again = SentenceTransformer(str(tmp_path / "st"), trust_remote_code=True, model_kwargs=FLOAT32)
    assert again.prompts == st.prompts


def test_token_embeddings_and_batches_of_any_size(tiny_llama_dir):
    lm = lm_for(tiny_llama_dir)
    st = to_sentence_transformer(lm)
    tokens = st.encode(TEXTS[:2], prompt="", output_value="token_embeddings")  # bare texts: no prompt tokens
    assert [t.shape[0] for t in tokens] == [len(lm.tokenizer(t)["input_ids"]) for t in TEXTS[:2]]
    one_by_one = np.stack([st.encode(t) for t in TEXTS])
    assert np.abs(one_by_one - st.encode(TEXTS, batch_size=4)).max() <= TOL


def test_save_writes_a_folder_that_reloads_to_the_same_vectors(tiny_llama_dir, tmp_path):
    lm = lm_for(tiny_llama_dir, attention="bidirectional", pooling="mean")
    st = to_sentence_transformer(lm)
    st.save(str(tmp_path / "st"))
    folder = tmp_path / "st"
    modules = json.loads((folder / "modules.json").read_text())
    assert (
        modules[0]["type"] == "sentence_transformers_egtlm.encoder.EgtLMEncoder" and modules[0]["path"] == ""
    )
    assert modules[1]["type"].endswith("Normalize")
    config = json.loads((folder / "config_sentence_transformers.json").read_text())
    assert config["prompts"] == st.prompts and config["similarity_fn_name"] == "cosine"
    settings = json.loads((folder / "egtlm_encoder.json").read_text())
    assert settings["attention"] == "bidirectional" and settings["pooling"] == "mean"
    for name in ("model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json"):
        assert (folder / name).is_file(), name

    again = SentenceTransformer(str(folder), trust_remote_code=True, model_kwargs=FLOAT32)
    assert isinstance(again[0], EgtLMEncoder) and again[0].lm is not lm
    for encode, reference in [("encode", "encode"), ("encode_query", "encode_queries")]:
        got = getattr(again, encode)(TEXTS)
        assert np.abs(got - getattr(lm, reference)(TEXTS)).max() <= TOL
    assert np.abs(again.encode_document(TEXTS) - lm.encode_documents(TEXTS)).max() <= TOL
    # The folder is also an EgtLM checkpoint (causal LM weights + tokenizer).
    as_lm = EgtLM(str(folder), torch_dtype="float32", attention="bidirectional", pooling="mean")
    assert np.abs(as_lm.encode(TEXTS) - lm.encode(TEXTS)).max() <= TOL


def test_reload_needs_trust_remote_code(tiny_llama_dir, tmp_path):
    to_sentence_transformer(lm_for(tiny_llama_dir)).save(str(tmp_path / "st"))
    with pytest.raises(ValueError, match="trust_remote_code=True"):
        SentenceTransformer(str(tmp_path / "st"))


def test_encoder_module_round_trip_and_max_seq_length(tiny_llama_dir, tmp_path):
    enc = EgtLMEncoder(str(tiny_llama_dir), model_kwargs=FLOAT32, pooling="mean", max_seq_length=6)
    enc.save(str(tmp_path))
    loaded = EgtLMEncoder.load(str(tmp_path), model_kwargs=FLOAT32)
    assert loaded.get_config_dict() == enc.get_config_dict()
    assert loaded.max_seq_length == 6 and loaded.pooling == "mean"
    with pytest.warns(UserWarning, match="truncated"):
        features = loaded.preprocess([TEXTS[3]])
    assert features["input_ids"].shape == (1, 6)


def test_init_defaults_fill_only_what_the_saved_config_leaves_out(tiny_llama_dir, tmp_path):
    """sentence-transformers' loader may pass `init_defaults`; as in its own modules, saved settings win."""
    encoder = EgtLMEncoder(str(tiny_llama_dir), model_kwargs=FLOAT32, pooling="mean", max_seq_length=6)
    encoder.save(str(tmp_path))
    settings_file = tmp_path / "egtlm_encoder.json"
    settings = json.loads(settings_file.read_text())
    del settings["max_seq_length"]
    settings_file.write_text(json.dumps(settings))
    loaded = EgtLMEncoder.load(
        str(tmp_path), model_kwargs=FLOAT32, init_defaults={"pooling": "last", "max_seq_length": 9}
    )
    assert loaded.pooling == "mean" and loaded.max_seq_length == 9


def test_errors_name_the_problem(tiny_llama_dir, tmp_path):
    lm = lm_for(tiny_llama_dir)
    st = to_sentence_transformer(lm)
    with pytest.raises(ValueError, match=r"texts\[1\] is empty"):
        st.encode(["fine", "  "])
    with pytest.raises(TypeError, match=r"texts\[0\] must be a string, got dict"):
        st[0].preprocess([{"image": 1}])
    with pytest.raises(ValueError, match="EgtLM instance"):
        EgtLMEncoder(lm, pooling="mean")
    with pytest.raises(ValueError, match="Unknown pooling 'bogus'"):
        EgtLMEncoder(str(tiny_llama_dir), pooling="bogus")
    with pytest.raises(FileNotFoundError, match="No saved EgtLMEncoder weights"):
        EgtLMEncoder.load(str(tmp_path))


def test_embedding_mode_saves_the_bare_transformer_and_reloads(tiny_llama_dir, tmp_path):
    st = to_sentence_transformer(str(tiny_llama_dir), mode="embedding", model_kwargs=FLOAT32)
    st.save(str(tmp_path / "st"))
    config = json.loads((tmp_path / "st" / "config.json").read_text())
    assert config["architectures"] == ["LlamaModel"]  # no LM head in embedding mode
    again = SentenceTransformer(str(tmp_path / "st"), trust_remote_code=True, model_kwargs=FLOAT32)
    lm = lm_for(tiny_llama_dir)
    assert again[0].mode == "embedding"
    assert np.abs(again.encode_query(TEXTS) - lm.encode_queries(TEXTS)).max() <= TOL


def test_documents_in_the_rag_context_embed_as_encode_documents_and_reload(tiny_llama_dir, tmp_path):
    """document_context="rag" (the shipped adapter's setting): the "document" prompt embeds a text
    after the RAG head, before and after save/reload; plain encode and queries are unchanged."""
    lm = lm_for(tiny_llama_dir, document_context="rag")
    st = to_sentence_transformer(lm)
    documents = st.encode_document(TEXTS)
    assert np.abs(documents - lm.encode_documents(TEXTS)).max() <= TOL
    instruction = EgtLM(str(tiny_llama_dir), **FLOAT32).encode_documents(TEXTS)
    assert np.abs(documents - instruction).max() > 1e-3  # not the document-instruction embedding
    st.save(str(tmp_path / "st"))
    assert json.loads((tmp_path / "st" / "egtlm_encoder.json").read_text())["document_context"] == "rag"
    again = SentenceTransformer(str(tmp_path / "st"), trust_remote_code=True, model_kwargs=FLOAT32)
    assert np.abs(again.encode_document(TEXTS) - documents).max() <= TOL
    assert np.abs(again.encode_query(TEXTS) - lm.encode_queries(TEXTS)).max() <= TOL


def test_module_saves_every_vector_field_but_max_length(tiny_llama_dir):
    """The settings saved with the module are the core's one list; max_length is `max_seq_length`."""
    from egtlm_core import EgtLMConfig

    saved = [k for k in EgtLMEncoder.config_keys if k not in ("mode", "max_seq_length")]
    assert saved == [k for k in EgtLMConfig.VECTOR_FIELDS if k != "max_length"]
    with pytest.raises(TypeError, match="max_length"):
        EgtLMEncoder(str(tiny_llama_dir), max_length=8)


@pytest.mark.parametrize(
    "config",
    [
        {"pooling": "last", "prompt_format": "e5"},  # the EOS suffix follows prompt_format
        {"document_context": "rag", "document_instruction": "Represent the passage"},
    ],
    ids=["e5-eos", "rag-custom-document-instruction"],
)
def test_reload_keeps_settings_beyond_the_prompts(tiny_llama_dir, tmp_path, config):
    """prompt_format and the instructions decide more than ST's prompt text (the EOS suffix, which
    prompt is the RAG document side): a reloaded folder embeds as the saved model did."""
    lm = lm_for(tiny_llama_dir, **config)
    to_sentence_transformer(lm).save(str(tmp_path / "st"))
    saved = json.loads((tmp_path / "st" / "egtlm_encoder.json").read_text())
    assert {k: saved[k] for k in config} == config
    again = SentenceTransformer(str(tmp_path / "st"), trust_remote_code=True, model_kwargs=FLOAT32)
    assert np.abs(again.encode_document(TEXTS) - lm.encode_documents(TEXTS)).max() <= TOL
    assert np.abs(again.encode_query(TEXTS) - lm.encode_queries(TEXTS)).max() <= TOL
