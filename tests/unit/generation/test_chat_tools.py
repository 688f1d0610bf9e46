"""`EgtLM.chat(tools=..., tool_choice=..., response_format=...)`: the core's tool calling and
structured output, on a tiny random model (the grammar is what makes its calls valid)."""

from __future__ import annotations

import dataclasses
import json

import jsonschema
import pytest
import torch

from egtlm_core import EgtLM, ToolCall
from egtlm_core.generation.constraints import OutputConstraint, check_tools, response_schema

pytest.importorskip("xgrammar")

ADD = {
    "type": "function",
    "function": {
        "name": "add",
        "description": "Add two integers.",
        "parameters": {
            "type": "object",
            "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
            "required": ["a", "b"],
        },
    },
}
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
}
USER = [{"role": "user", "content": "What is 1 + 2?"}]


@pytest.fixture(scope="module")
def lm(tiny_llama_dir) -> EgtLM:
    return EgtLM(str(tiny_llama_dir), torch_dtype="float32")


def _schemas() -> dict[str, dict]:
    return {t["function"]["name"]: t["function"]["parameters"] for t in (ADD, WEATHER)}


@pytest.mark.parametrize("tool_choice", ["required", "any", True, "add", {"function": {"name": "add"}}])
def test_forced_call_is_parsed_onto_the_result(lm, tool_choice):
    result = lm.chat(USER, tools=[WEATHER, ADD], tool_choice=tool_choice, max_new_tokens=64)
    (call,) = result.tool_calls
    assert isinstance(call, ToolCall) and call.id.startswith("call_") and result.tool_call_error is None
    jsonschema.validate(call.arguments, _schemas()[call.name])
    assert json.loads(result.text) == {"name": call.name, "arguments": call.arguments}
    if tool_choice in ("add",) or isinstance(tool_choice, dict):
        assert call.name == "add"
    with pytest.raises(dataclasses.FrozenInstanceError):
        call.name = "other"  # type: ignore[misc]


def test_stop_strings_do_not_apply_under_a_grammar(lm):
    """A stop string that the call's JSON contains would cut it: under a grammar there are none."""
    result = lm.chat(USER, tools=[ADD], tool_choice="add", stop=['"', "{"], max_new_tokens=64)
    (call,) = result.tool_calls
    assert call.name == "add" and set(call.arguments) == {"a", "b"}


def test_streamed_forced_call_is_held_back_and_parsed(lm):
    plain = lm.chat(USER, tools=[ADD], tool_choice="required", max_new_tokens=64)
    with lm.stream_chat(USER, tools=[ADD], tool_choice="required", max_new_tokens=64) as stream:
        pieces = list(stream)
    assert pieces == []  # the call is not text
    (call,) = stream.result.tool_calls
    assert (call.name, call.arguments) == (plain.tool_calls[0].name, plain.tool_calls[0].arguments)


def test_auto_answers_freely_and_streams_text(lm):
    result = lm.chat(USER, tools=[ADD], max_new_tokens=8)
    assert result.tool_calls == [] and result.tool_call_error is None  # a random model answers in text
    stream = lm.stream_chat(USER, tools=[ADD], max_new_tokens=8)
    assert "".join(stream) == result.text and stream.result.tool_calls == []


def test_tools_are_described_in_the_prompt(lm, monkeypatch):
    import egtlm_core.model as model_module

    seen = []

    real = model_module.chat_input_ids

    def spy(tokenizer, messages, template_kwargs=None):
        seen.append(messages)
        return real(tokenizer, messages, template_kwargs)

    monkeypatch.setattr(model_module, "chat_input_ids", spy)
    lm.chat(USER, tools=[ADD], max_new_tokens=2)
    assert seen[0][0]["role"] == "system" and '"name": "add"' in seen[0][0]["content"]
    assert "answer normally" in seen[0][0]["content"]


def test_a_forced_call_cut_short_reports_why(lm):
    stream = lm.stream_chat(USER, tools=[ADD], tool_choice="add", max_new_tokens=64)
    stream.cancel()  # nothing read yet: cancelled before the first token
    list(stream)
    assert stream.result.tool_calls == [] and "did not complete" in (stream.result.tool_call_error or "")


def test_budget_too_small_for_the_call_is_an_error(lm):
    with pytest.raises(ValueError, match="too small for this schema"):
        lm.chat(USER, tools=[ADD], tool_choice="add", max_new_tokens=3)


@pytest.mark.parametrize(
    "response_format",
    [
        {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON}},
        {"type": "json_schema", "schema": PERSON},
        {"type": "json_object", "schema": PERSON},
    ],
)
def test_json_schema_response_is_parsed(lm, response_format):
    torch.manual_seed(0)
    result = lm.chat(USER, response_format=response_format, max_new_tokens=64, temperature=1.0)
    jsonschema.validate(result.parsed, PERSON)
    assert result.parsed == json.loads(result.text) and result.tool_calls == []


def test_json_object_response_and_text(lm):
    result = lm.chat(USER, response_format={"type": "json_object"}, stop=["}"], max_new_tokens=48)
    assert isinstance(result.parsed, dict)
    stream = lm.stream_chat(USER, response_format={"type": "json_object"}, max_new_tokens=48)
    assert json.loads("".join(stream)) == stream.result.parsed
    assert lm.chat(USER, response_format={"type": "text"}, max_new_tokens=2).parsed is None


def test_bad_tools_and_formats_are_refused_at_the_call(lm):
    with pytest.raises(ValueError, match="not a bound tool"):
        lm.chat(USER, tools=[ADD], tool_choice="nope")
    with pytest.raises(ValueError, match="Unknown tool_choice"):
        lm.chat(USER, tools=[ADD], tool_choice=3.5)
    with pytest.raises(ValueError, match="must be"):
        lm.chat(USER, tools=[{"description": "no name"}])
    with pytest.raises(TypeError, match="list of tool dicts"):
        lm.chat(USER, tools=ADD)
    with pytest.raises(ValueError, match="Unknown response_format type"):
        lm.chat(USER, response_format={"type": "xml"})
    with pytest.raises(ValueError, match="needs a json_schema object"):
        lm.stream_chat(USER, response_format={"type": "json_schema"})


def test_bare_function_dicts_are_wrapped():
    (tool,) = check_tools([ADD["function"]])
    assert tool == ADD
    assert response_schema(None) == (False, None) and response_schema({"type": "json_object"}) == (True, None)


def test_tools_win_over_a_response_format(lm):
    constraint = OutputConstraint.resolve(lm.tokenizer, lm.model, [ADD], "auto", {"type": "json_object"})
    assert constraint.tools is not None and constraint.grammar is None and not constraint.json_output
    assert constraint.stop(["x"]) == ("x",)
