"""Grammar-constrained decoding on a tiny random model: every output parses and validates.

A random model is the worst case for a grammar: it never wants to close a string or a bracket, so
these tests also exercise the token-budget steering (strings closed in time, brackets preferred when
the budget runs low). Sampling at temperature 1 with several seeds gives varied outputs.
"""

from __future__ import annotations

import json

import jsonschema
import pytest
import torch

from egtlm_core import EgtLM
from egtlm_core.generation.constrained import (
    RESERVE_MARGIN,
    JsonLogitsProcessor,
    closing_need,
    json_grammar,
    tool_call_schema,
)

pytest.importorskip("xgrammar")

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer"},
        "mood": {"enum": ["happy", "sad"]},
        "tags": {"type": "array", "items": {"type": "string"}},
        "address": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "zip": {"type": "string"}},
            "required": ["city"],
        },
        "note": {"anyOf": [{"type": "string"}, {"type": "null"}]},
    },
    "required": ["name", "age", "mood", "tags", "address"],
}
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather at a place.",
            "parameters": {
                "type": "object",
                "properties": {"location": {"type": "string"}},
                "required": ["location"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "add",
            "parameters": {
                "type": "object",
                "properties": {"a": {"type": "integer"}, "b": {"type": "number"}},
                "required": ["a", "b"],
            },
        },
    },
    {"type": "function", "function": {"name": "no_args", "parameters": {"type": "object", "properties": {}}}},
]
MESSAGES = [{"role": "user", "content": "Tell me about the fox"}]


@pytest.fixture(scope="module")
def lm(tiny_llama_dir) -> EgtLM:
    return EgtLM(str(tiny_llama_dir), torch_dtype="float32")


def generate(lm: EgtLM, grammar, max_new_tokens: int, seed: int, temperature: float = 1.0):
    torch.manual_seed(seed)
    processor = grammar.processor(max_new_tokens=max_new_tokens)
    result = lm.chat(
        MESSAGES, max_new_tokens=max_new_tokens, temperature=temperature, logits_processor=[processor]
    )
    return result, processor


@pytest.mark.parametrize("extra_tokens", [0, 24, 96])
def test_every_output_validates_against_the_schema(lm, extra_tokens):
    """Budgets from the schema's shortest completion (the tiny tokenizer spells keys out: ~70
    tokens) upward; at the shortest the output is the schema's minimal instance."""
    grammar = json_grammar(lm.tokenizer, PERSON, model=lm.model)
    max_new_tokens = grammar.min_tokens + RESERVE_MARGIN + extra_tokens
    for seed in range(4):
        result, _ = generate(lm, grammar, max_new_tokens, seed)
        assert result.completion_tokens <= max_new_tokens
        jsonschema.validate(json.loads(result.text), PERSON)


def test_shortest_completion_is_measured_on_the_grammar(lm):
    small = json_grammar(lm.tokenizer, {"type": "object", "properties": {}}, model=lm.model)
    big = json_grammar(lm.tokenizer, PERSON, model=lm.model)
    assert 0 < small.min_tokens < 8 < big.min_tokens < 200
    with pytest.raises(ValueError, match=f"shortest valid output takes {big.min_tokens} tokens"):
        big.processor(max_new_tokens=big.min_tokens - 1)


def test_greedy_output_validates_too(lm):
    grammar = json_grammar(lm.tokenizer, PERSON, model=lm.model)
    result, _ = generate(lm, grammar, grammar.min_tokens + RESERVE_MARGIN + 16, seed=0, temperature=0.0)
    jsonschema.validate(json.loads(result.text), PERSON)


def test_budget_steering_is_what_closes_a_random_models_strings(lm):
    """Without the budget the random model runs to max_new_tokens inside a string."""
    schema = {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}
    grammar = json_grammar(lm.tokenizer, schema, model=lm.model)
    torch.manual_seed(0)
    unguarded = lm.chat(MESSAGES, max_new_tokens=40, temperature=1.0, logits_processor=[grammar.processor()])
    with pytest.raises(json.JSONDecodeError):
        json.loads(unguarded.text)
    assert unguarded.finish_reason == "length"
    guarded, processor = generate(lm, grammar, 40, seed=0)
    assert processor.forced_closes > 0
    assert isinstance(json.loads(guarded.text)["text"], str)


def test_max_string_tokens_caps_each_string(lm):
    schema = {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}
    grammar = json_grammar(lm.tokenizer, schema, model=lm.model)
    torch.manual_seed(0)
    processor = grammar.processor(max_new_tokens=200, max_string_tokens=5)
    result = lm.chat(MESSAGES, max_new_tokens=200, temperature=1.0, logits_processor=[processor])
    text = json.loads(result.text)["text"]
    assert len(lm.tokenizer(text, add_special_tokens=False)["input_ids"]) <= 8  # 5 + re-tokenization slack


def test_any_json_object_when_no_schema(lm):
    grammar = json_grammar(lm.tokenizer, None, model=lm.model)
    for seed in range(3):
        result, _ = generate(lm, grammar, grammar.min_tokens + 32, seed)
        assert isinstance(json.loads(result.text), dict)


def test_tool_call_choice_among_several_tools(lm):
    schema = tool_call_schema(TOOLS)
    params = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
    grammar = json_grammar(lm.tokenizer, schema, model=lm.model)
    for seed in range(6):
        result, _ = generate(lm, grammar, grammar.min_tokens + 32, seed)
        call = json.loads(result.text)
        assert set(call) == {"name", "arguments"}
        jsonschema.validate(call["arguments"], params[call["name"]])


def test_tool_call_schema_shapes():
    one = tool_call_schema(TOOLS[:1])
    assert one["properties"]["name"] == {"const": "get_weather"}
    assert one["required"] == ["name", "arguments"]
    assert len(tool_call_schema(TOOLS)["anyOf"]) == 3
    bare = tool_call_schema([{"name": "f"}])  # a bare function dict, no parameters
    assert bare["properties"]["arguments"] == {"type": "object", "properties": {}}
    with pytest.raises(ValueError, match="at least one tool"):
        tool_call_schema([])
    with pytest.raises(ValueError, match="needs a 'name'"):
        tool_call_schema([{"function": {"parameters": {}}}])


def test_schema_as_string_and_bad_schemas(lm):
    grammar = json_grammar(lm.tokenizer, json.dumps(PERSON), model=lm.model)
    assert grammar.schema == PERSON
    with pytest.raises(ValueError, match="not valid JSON"):
        json_grammar(lm.tokenizer, "{not json", model=lm.model)
    with pytest.raises(ValueError, match="Cannot compile"):
        json_grammar(lm.tokenizer, {"type": "no-such-type"}, model=lm.model)


def test_processor_is_per_generation_and_batch_one(lm):
    grammar = json_grammar(lm.tokenizer, PERSON, model=lm.model)
    a, b = grammar.processor(), grammar.processor()
    assert isinstance(a, JsonLogitsProcessor) and a is not b and a.matcher is not b.matcher
    scores = torch.zeros(2, lm.model.config.vocab_size)
    with pytest.raises(ValueError, match="one sequence"):
        a(torch.zeros(2, 3, dtype=torch.long), scores)


def test_allowed_tokens_reads_xgrammars_bitmask(lm):
    """The numpy bit unpacking agrees with xgrammar's own masking kernel."""
    import xgrammar as xgr

    from egtlm_core.generation.constrained import allowed_tokens

    grammar = json_grammar(lm.tokenizer, PERSON, model=lm.model)
    size = grammar._vocab.vocab_size
    matcher = xgr.GrammarMatcher(grammar.compiled)
    bitmask = xgr.allocate_token_bitmask(1, size)
    for text in ['{"name": "', 'fox", "age": 1']:
        assert matcher.accept_string(text)
        allowed = allowed_tokens(matcher, bitmask, size)
        probe = torch.zeros(1, size)
        xgr.apply_token_bitmask_inplace(probe, bitmask)
        assert (torch.from_numpy(allowed) == (probe[0] == 0)).all()
        assert 0 < allowed.sum() < size


def test_vocabulary_is_compiled_once_per_tokenizer(lm):
    first = json_grammar(lm.tokenizer, PERSON, model=lm.model)
    second = json_grammar(lm.tokenizer, {"type": "object"}, model=lm.model)
    assert first._vocab is second._vocab


def test_a_prompt_that_leaves_less_room_shrinks_the_grammar_budget(lm):
    """The prompt fills the context so that only the schema's minimum (+ margin) is left: the
    processor made for a larger budget is told, and the JSON still closes in time."""
    grammar = json_grammar(lm.tokenizer, PERSON, model=lm.model)
    room = grammar.min_tokens + RESERVE_MARGIN
    limit = lm.model.config.max_position_embeddings
    words = 1
    while (
        len(
            lm.tokenizer.apply_chat_template(
                [{"role": "user", "content": "fox " * (words + 1)}],
                add_generation_prompt=True,
                return_dict=True,
            )["input_ids"]
        )
        <= limit - room
    ):
        words += 1
    messages = [{"role": "user", "content": "fox " * words}]
    left = limit - len(
        lm.tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=True)["input_ids"]
    )
    assert room <= left < room + 4
    for seed in range(3):
        torch.manual_seed(seed)
        processor = grammar.processor(max_new_tokens=left + 200)
        with pytest.warns(UserWarning, match=f"generating at most {left} tokens"):
            result = lm.chat(
                messages, max_new_tokens=left + 200, temperature=1.0, logits_processor=[processor]
            )
        assert processor.max_new_tokens == left and result.completion_tokens <= left
        jsonschema.validate(json.loads(result.text), PERSON)
    tight = grammar.processor(max_new_tokens=200)
    with pytest.raises(ValueError, match="too small for this schema"):
        tight.limit_budget(grammar.min_tokens - 1)


LONG_KEY = {
    "type": "object",
    "properties": {"the_answer_to_the_question_about_the_fox": {"type": "string"}},
    "required": ["the_answer_to_the_question_about_the_fox"],
}


def test_closing_need_is_measured_from_where_the_json_stands(lm):
    """Once the long key is written, closing takes a token or two, not the whole shortest output."""
    grammar = json_grammar(lm.tokenizer, LONG_KEY, model=lm.model)
    processor = grammar.processor(max_new_tokens=200)
    assert processor.matcher.accept_string('{"the_answer_to_the_question_about_the_fox": "a fox')
    bitmask = torch.zeros_like(processor._sim_bitmask)
    need = closing_need(processor.matcher, processor._vocab, bitmask)
    assert 1 <= need <= 2 < grammar.min_tokens
    assert closing_need(processor.matcher, processor._vocab, bitmask) == need  # measured on a fork
    assert processor.matcher.accept_string('"}') and processor.matcher.is_completed()


@pytest.mark.parametrize("extra_tokens", [8, 16, 32])
def test_a_modest_budget_is_spent_before_the_json_is_closed(lm, extra_tokens):
    """With `extra_tokens` beyond the schema's shortest output, the model writes freely until what
    is left is what closing takes from there: steering only closes the string and the object at
    the end (measuring the need from the start steered from step `extra_tokens` on, spelling the
    key out and closing the string as soon as it opened)."""
    grammar = json_grammar(lm.tokenizer, LONG_KEY, model=lm.model)
    budget = grammar.min_tokens + RESERVE_MARGIN + extra_tokens
    for seed in range(3):
        torch.manual_seed(seed)
        processor = grammar.processor(max_new_tokens=budget, max_string_tokens=1000)
        result = lm.chat(MESSAGES, max_new_tokens=budget, temperature=1.0, logits_processor=[processor])
        assert isinstance(json.loads(result.text)["the_answer_to_the_question_about_the_fox"], str)
        assert processor.forced_closes <= 2, (seed, processor.forced_closes, result.text)
        assert budget - RESERVE_MARGIN - 3 <= result.completion_tokens <= budget
