"""`GenerationOptions`: one frozen, checked object for what `EgtLM.chat` takes besides the messages."""

from __future__ import annotations

import dataclasses

import pytest

from egtlm_core import EgtLM, GenerationOptions


@pytest.fixture(scope="module")
def lm(tiny_llama_dir) -> EgtLM:
    return EgtLM(str(tiny_llama_dir), torch_dtype="float32")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"max_new_tokens": 0}, "max_new_tokens must be a positive integer"),
        ({"max_new_tokens": True}, "max_new_tokens must be a positive integer"),
        ({"temperature": -1.0}, "temperature ≥ 0"),
        ({"top_p": 0.0}, "0 < top_p ≤ 1"),
        (
            {"tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": "g"},
            "not a bound tool",
        ),
        ({"response_format": {"type": "yaml"}}, "Unknown response_format type"),
        ({"recompute_tokens": -1}, "recompute_tokens"),
    ],
)
def test_bad_values_fail_at_construction(fields, message):
    with pytest.raises(ValueError, match=message):
        GenerationOptions(**fields)


def test_frozen_with_one_stop_string_as_one():
    options = GenerationOptions(stop="END")
    assert options.stop == ("END",)
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.max_new_tokens = 3  # type: ignore[misc]


def test_unknown_names_are_refused_with_a_hint():
    with pytest.raises(TypeError, match="'max_tokens' -> 'max_new_tokens'"):
        GenerationOptions.from_options({"max_tokens": 3})
    with pytest.raises(TypeError, match="options must be a GenerationOptions"):
        GenerationOptions.from_options({}, base=64)  # type: ignore[arg-type]


def test_chat_takes_an_options_object_and_keywords_override_it(lm):
    options = GenerationOptions(max_new_tokens=5)
    by_object = lm.chat("hi", options)
    assert by_object.text == lm.chat("hi", max_new_tokens=5).text and by_object.completion_tokens <= 5
    assert lm.chat("hi", options, max_new_tokens=2).completion_tokens <= 2
    assert "".join(lm.stream_chat("hi", options)) == by_object.text
