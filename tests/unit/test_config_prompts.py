"""Settings, GritLM's names, instruction formats, and the query/document helpers."""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest
import torch

from egtlm_core import EgtLM, EgtLMConfig, document_text, format_instruction
from egtlm_core.config import ATTENTIONS, MODES, POOLINGS, PROMPT_FORMATS

QUERIES = ["what is a fox?", "capital of France"]
DOCS = ["The quick brown fox jumps over the lazy dog.", "Paris is the capital of France."]


def load(directory, **kwargs) -> EgtLM:
    return EgtLM(str(directory), torch_dtype="float32", **kwargs)


# --- format_instruction -----------------------------------------------------------------------------
def test_format_instruction_egtlm_and_gritlm():
    for fmt in ("egtlm", "gritlm"):
        assert format_instruction("Retrieve passages", fmt) == "<|user|>\nRetrieve passages\n<|embed|>\n"
        assert format_instruction("", fmt) == "<|embed|>\n"
    assert format_instruction("Retrieve passages") == "<|user|>\nRetrieve passages\n<|embed|>\n"


def test_format_instruction_e5_none_custom():
    assert format_instruction("Given a question, retrieve passages", "e5") == (
        "Instruct: Given a question, retrieve passages\nQuery: "
    )
    assert format_instruction("", "e5") == ""
    assert format_instruction("search_query: ", "none") == "search_query: "
    assert format_instruction("", "none") == ""
    assert format_instruction("find it", "custom", "<task>{instruction}</task> ") == "<task>find it</task> "


def test_format_instruction_errors():
    with pytest.raises(ValueError, match=r"\{instruction\}"):
        format_instruction("x", "custom", "no placeholder")
    with pytest.raises(ValueError, match=r"\{instruction\}"):
        format_instruction("x", "custom")
    with pytest.raises(ValueError, match="egtlm"):
        format_instruction("x", "instructor")


# --- document_text ----------------------------------------------------------------------------------
def test_document_text():
    assert document_text("plain") == "plain"
    assert document_text({"title": "Foxes", "text": "They jump."}) == "Foxes They jump."
    assert document_text({"title": "", "text": "They jump."}) == "They jump."
    assert document_text({"title": None, "text": "They jump."}) == "They jump."
    assert document_text({"text": "They jump."}) == "They jump."
    with pytest.raises(ValueError, match="'text'"):
        document_text({"title": "Foxes"})
    with pytest.raises(TypeError, match="strings"):
        document_text({"title": "Foxes", "text": 3})
    with pytest.raises(TypeError, match="int"):
        document_text(7)


# --- config -----------------------------------------------------------------------------------------
def test_config_defaults():
    c = EgtLMConfig()
    assert (c.mode, c.pooling, c.attention, c.normalize, c.embed_eos, c.prompt_format) == (
        "unified",
        "weightedmean",
        "causal",
        True,
        None,
        "egtlm",
    )
    assert c.document_instruction == "" and c.query_instruction
    assert c.resolved_capture == "reuse"  # causal embedding: its states are the generation states
    assert EgtLMConfig(attention="bidirectional").resolved_capture == "causal"
    assert EgtLMConfig(attention="causal").resolved_capture == "reuse"
    assert EgtLMConfig(cache_capture="reuse").resolved_capture == "reuse"


@pytest.mark.parametrize(
    ("field", "value", "valid"),
    [
        ("pooling", "max", POOLINGS),
        ("attention", "sideways", ATTENTIONS),
        ("mode", "both", MODES),
        ("prompt_format", "instructor", PROMPT_FORMATS),
        ("cache_capture", "maybe", ("auto", "reuse", "causal")),
    ],
)
def test_unknown_choices_list_the_valid_ones(tiny_llama_dir, field, value, valid):
    with pytest.raises(ValueError) as info:
        EgtLMConfig(**{field: value})
    assert value in str(info.value) and all(v in str(info.value) for v in valid)
    with pytest.raises(ValueError, match=value):
        load(tiny_llama_dir, **{field: value})


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_length": 1}, "max_length"),
        ({"max_length": "512"}, "max_length"),
        ({"batch_size": 0}, "batch_size"),
        ({"prompt_format": "custom"}, "prompt_template"),
        ({"prompt_format": "custom", "prompt_template": "no placeholder"}, "prompt_template"),
        ({"prompt_template": "{instruction}"}, "custom"),
        ({"pooling": "mean", "pooling_method": "mean"}, "either"),
        ({"attention": "causal", "attn": "cccc"}, "either"),
        ({"normalize": True, "normalized": True}, "either"),
    ],
)
def test_config_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        EgtLMConfig.from_kwargs(kwargs)


def test_from_kwargs_separates_unknown():
    cfg, rest = EgtLMConfig.from_kwargs({"pooling_method": "lasttoken", "foo": 1})
    assert cfg.pooling == "last" and rest == {"foo": 1}


@pytest.mark.parametrize(
    ("alias", "name"),
    [
        ("lasttoken", "last"),
        ("last_token", "last"),
        ("cls_token", "cls"),
        ("weighted_mean", "weightedmean"),
        ("mean", "mean"),
    ],
)
def test_pooling_aliases(alias, name):
    assert EgtLMConfig(pooling=alias).pooling == name


def test_unknown_constructor_kwargs(tiny_llama_dir):
    with pytest.raises(TypeError, match="poolng"):
        load(tiny_llama_dir, poolng="mean")
    with pytest.raises(ValueError, match="padding_side"):
        load(tiny_llama_dir, padding_side="middle")


def test_unknown_dtype_and_device(tiny_llama_dir):
    with pytest.raises(ValueError, match="dtype"):
        EgtLM(str(tiny_llama_dir), torch_dtype="float13")
    with pytest.raises(ValueError, match="device"):
        EgtLM(str(tiny_llama_dir), torch_dtype="float32", device="toaster")


def test_flash_attention_refused_for_embedding(tiny_llama_dir):
    with pytest.raises(ValueError, match="sdpa"):
        load(tiny_llama_dir, attn_implementation="flash_attention_2")


# --- GritLM's names ---------------------------------------------------------------------------------
def test_gritlm_names_map_and_embed_like_gritlm(tiny_llama_dir):
    m = load(tiny_llama_dir, pooling_method="lasttoken", normalized=False, attn="cccc", embed_eos="</s>")
    c = m.config
    assert (c.pooling, c.normalize, c.attention, c.embed_eos) == ("last", False, "causal", "</s>")
    got = m.encode(DOCS, instruction=format_instruction("", "gritlm"))
    norms = np.linalg.norm(got, axis=1)
    assert np.all(np.abs(norms - 1.0) > 1e-3)
    # GritLM: instruction + text + "</s>", causal, last token's state, not normalised.
    for text, row in zip(DOCS, got, strict=True):
        ids = (
            m.tokenizer("<|embed|>\n" + text)["input_ids"]
            + m.tokenizer("</s>", add_special_tokens=False)["input_ids"]
        )
        assert ids[-1] == m.tokenizer.eos_token_id
        with torch.no_grad():
            want = m.model.model(input_ids=torch.tensor([ids])).last_hidden_state[0, -1]
        np.testing.assert_allclose(row, want.numpy(), atol=1e-5)
    bbcc = load(tiny_llama_dir, pooling_method="mean", normalized=True, attn="bbcc")
    assert (bbcc.config.pooling, bbcc.config.normalize, bbcc.config.attention) == (
        "mean",
        True,
        "bidirectional",
    )
    np.testing.assert_allclose(np.linalg.norm(bbcc.encode(DOCS), axis=1), 1.0, atol=1e-5)


def gritlm_reference(m: EgtLM, texts: list[str], instruction: str, embed_eos: str = "") -> np.ndarray:
    """GritLM's encode written out: tokenize instruction + text + embed_eos (GritLM's default embed_eos
    is ""), run the causal model, take the last position's state, L2-normalise."""
    rows = []
    for text in texts:
        ids = m.tokenizer(instruction + text + embed_eos)["input_ids"]
        with torch.no_grad():
            state = m.model.model(input_ids=torch.tensor([ids])).last_hidden_state[0, -1]
        rows.append(torch.nn.functional.normalize(state, dim=-1).numpy())
    return np.stack(rows)


@pytest.mark.parametrize("arch", ["llama", "qwen2", "mistral"])
def test_gritlm_lasttoken_pools_the_last_text_token_without_eos(tiny_model_dirs, arch):
    m = load(tiny_model_dirs[arch], pooling_method="lasttoken", attn="cccc")
    assert m.config.embed_eos is None and not m.config.appends_eos
    instruction = format_instruction("Retrieve passages", "gritlm")
    got = m.encode(DOCS, instruction=instruction)
    np.testing.assert_allclose(got, gritlm_reference(m, DOCS, instruction), atol=1e-5)
    # the reference really pools a text token, not EOS, and EOS would have changed the vector
    assert m.tokenizer(instruction + DOCS[0])["input_ids"][-1] != m.tokenizer.eos_token_id
    with_eos = gritlm_reference(m, DOCS, instruction, embed_eos=m.tokenizer.eos_token)
    assert np.abs(got - with_eos).max() > 1e-3


def test_eos_is_appended_for_e5_prompts_or_when_asked(tiny_llama_dir):
    e5 = load(tiny_llama_dir, pooling="last", prompt_format="e5")
    assert e5.config.appends_eos
    bare = e5.encode(DOCS, instruction="")
    np.testing.assert_allclose(bare, gritlm_reference(e5, DOCS, "", "</s>"), atol=1e-5)
    asked = load(tiny_llama_dir, pooling_method="lasttoken", attn="cccc", embed_eos="</s>")
    np.testing.assert_allclose(
        asked.encode(DOCS, instruction=""), gritlm_reference(asked, DOCS, "", "</s>"), atol=1e-5
    )
    assert not EgtLMConfig(pooling="mean", prompt_format="e5").appends_eos  # only last pooling pools EOS
    assert not EgtLMConfig(pooling="last", prompt_format="e5", embed_eos="").appends_eos


# --- encode_queries / encode_documents --------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "expected_prefix"),
    [
        ({}, "<|user|>\nGiven a question, retrieve passages that answer the question\n<|embed|>\n"),
        ({"prompt_format": "e5", "query_instruction": "Find answers"}, "Instruct: Find answers\nQuery: "),
        (
            {"prompt_format": "custom", "prompt_template": "Q[{instruction}]: ", "query_instruction": "x"},
            "Q[x]: ",
        ),
        ({"prompt_format": "none", "query_instruction": "search_query: "}, "search_query: "),
    ],
)
def test_encode_queries_applies_the_query_instruction(tiny_llama_dir, kwargs, expected_prefix):
    m = load(tiny_llama_dir, **kwargs)
    c = m.config
    assert format_instruction(c.query_instruction, c.prompt_format, c.prompt_template) == expected_prefix
    got = m.encode_queries(QUERIES)
    np.testing.assert_allclose(got, m.encode(QUERIES, instruction=expected_prefix), atol=1e-6)
    assert np.abs(got - m.encode(QUERIES)).max() > 1e-3
    np.testing.assert_allclose(m.encode_queries(QUERIES[0]), got[0], atol=1e-5)


def test_encode_documents_default_has_no_task_instruction(tiny_llama_dir):
    m = load(tiny_llama_dir)
    got = m.encode_documents(DOCS)
    # No task text: the bare GritLM/EGTLM embed marker, as GritLM embeds its documents.
    np.testing.assert_allclose(got, m.encode(DOCS, instruction=format_instruction("")), atol=1e-6)
    assert np.abs(got - m.encode_queries(DOCS)).max() > 1e-3
    plain = load(tiny_llama_dir, prompt_format="none")
    np.testing.assert_allclose(plain.encode_documents(DOCS), plain.encode(DOCS), atol=1e-6)
    e5 = load(tiny_llama_dir, prompt_format="e5")
    np.testing.assert_allclose(e5.encode_documents(DOCS), e5.encode(DOCS), atol=1e-6)


def test_encode_documents_with_document_instruction(tiny_llama_dir):
    m = load(tiny_llama_dir, document_instruction="Represent the passage")
    np.testing.assert_allclose(
        m.encode_documents(DOCS),
        m.encode(DOCS, instruction="<|user|>\nRepresent the passage\n<|embed|>\n"),
        atol=1e-6,
    )


def test_encode_documents_accepts_title_text_dicts(tiny_llama_dir):
    m = load(tiny_llama_dir, prompt_format="none")
    docs = [{"title": "Foxes", "text": DOCS[0]}, {"text": DOCS[1]}, DOCS[0]]
    got = m.encode_documents(docs)
    want = m.encode(["Foxes " + DOCS[0], DOCS[1], DOCS[0]])
    np.testing.assert_allclose(got, want, atol=1e-6)
    single = m.encode_documents({"title": "Foxes", "text": DOCS[0]})
    assert single.shape == (64,)
    np.testing.assert_allclose(single, want[0], atol=1e-5)
    with pytest.raises(ValueError, match="'text'"):
        m.encode_documents([{"title": "only a title"}])


# --- VECTOR_FIELDS: the one list of settings that decide a vector -----------------------------------
LONG_DOC = "The quick brown fox jumps over the lazy dog. " * 5  # longer than max_length=40 below
CUSTOM = {"prompt_format": "custom", "prompt_template": "<task>{instruction}</task> "}
# field -> (settings it is changed from, the change): every VECTOR_FIELDS entry has one.
VECTOR_CHANGES = {
    "pooling": ({}, {"pooling": "mean"}),
    "attention": ({}, {"attention": "bidirectional"}),
    "normalize": ({}, {"normalize": False}),
    "embed_eos": ({}, {"embed_eos": "</s>"}),
    "prompt_format": ({}, {"prompt_format": "e5"}),
    "prompt_template": (CUSTOM, {**CUSTOM, "prompt_template": "[{instruction}] "}),
    "query_instruction": ({}, {"query_instruction": "Find the fox"}),
    "document_instruction": ({}, {"document_instruction": "Represent the passage"}),
    "document_context": ({}, {"document_context": "rag"}),
    "max_length": ({}, {"max_length": 40}),
}
# The other fields, and why they keep every vector (checked below): the same body weights embed in
# "unified" and "embedding" mode; batch sizes only batch (padding is masked out); cache_capture picks
# where KV caches come from.
NOT_VECTOR_CHANGES = {
    "mode": {"mode": "embedding"},
    "batch_size": {"batch_size": 1},
    "max_batch_tokens": {"max_batch_tokens": 16},
    "cache_capture": {"cache_capture": "causal"},
}


def _both_sides(m: EgtLM) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # max_length=40 truncates LONG_DOC, with a warning
        return np.concatenate([m.encode_queries(QUERIES), m.encode_documents([*DOCS, LONG_DOC])])


def test_vector_fields_are_config_fields_and_every_other_field_is_accounted_for():
    names = [f.name for f in dataclasses.fields(EgtLMConfig)]
    assert len(set(EgtLMConfig.VECTOR_FIELDS)) == len(EgtLMConfig.VECTOR_FIELDS)
    assert set(EgtLMConfig.VECTOR_FIELDS) <= set(names)
    assert "VECTOR_FIELDS" not in names  # a class constant, not a setting
    assert set(VECTOR_CHANGES) == set(EgtLMConfig.VECTOR_FIELDS)
    assert set(NOT_VECTOR_CHANGES) == set(names) - set(EgtLMConfig.VECTOR_FIELDS)


@pytest.mark.parametrize("field", EgtLMConfig.VECTOR_FIELDS)
def test_each_vector_field_changes_a_vector(tiny_llama_dir, field):
    before, after = VECTOR_CHANGES[field]
    assert {k for k in after if before.get(k) != after[k]} == {field}
    old, new = _both_sides(load(tiny_llama_dir, **before)), _both_sides(load(tiny_llama_dir, **after))
    assert np.abs(old - new).max() > 1e-3, field


@pytest.mark.parametrize("field", sorted(NOT_VECTOR_CHANGES))
def test_the_other_fields_keep_every_vector(tiny_llama_dir, field):
    np.testing.assert_allclose(
        _both_sides(load(tiny_llama_dir, **NOT_VECTOR_CHANGES[field])),
        _both_sides(load(tiny_llama_dir)),
        atol=1e-5,
    )
