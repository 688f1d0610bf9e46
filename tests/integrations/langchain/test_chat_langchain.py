"""`ChatEgtLM` beyond the standard suites: message rendering, usage and reuse metadata, stop
strings, async off the event loop, concurrency, forced tool calls and structured output.

Most tests run a tiny random model: it writes garbage, which is the hard case for the grammar
(every forced call and structured result must still validate). Tests marked slow use the default
model.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import threading
import time
from typing import Annotated

import jsonschema
import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.tools import tool
from langchain_egtlm import ChatEgtLM
from langchain_egtlm._messages import to_chat_messages
from pydantic import BaseModel, Field
from typing_extensions import TypedDict

from egtlm_core import EgtLM
from egtlm_core.cache import MemoryTier
from egtlm_core.generation import parse_calls, plan_tools, with_tools_prompt
from egtlm_core.generation.chat import ChatStream

FLOAT32 = {"torch_dtype": "float32"}


@tool
def get_weather(location: str) -> str:
    """Get the weather at a location."""
    return "It's sunny."


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


class Person(BaseModel):
    """A person."""

    name: str = Field(description="first name")
    age: int
    city: str | None = None


class PersonDict(TypedDict):
    """A person."""

    name: Annotated[str, ..., "first name"]
    age: int


@pytest.fixture(scope="module")
def tiny(tiny_llama_dir) -> dict:
    return {"model": str(tiny_llama_dir), "model_kwargs": FLOAT32, "reuse_cache": False}


@pytest.fixture(scope="module")
def chat(tiny) -> ChatEgtLM:
    return ChatEgtLM(**tiny, max_tokens=24)


# --- construction -------------------------------------------------------------------------------
def test_construction_is_lazy_and_notes_ignored_arguments(tiny, caplog):
    with caplog.at_level(logging.WARNING, logger="langchain_egtlm.chat_models"):
        chat = ChatEgtLM(**tiny, api_key="unused", timeout=5)
    assert not chat._lazy.loaded
    assert "ignores ['api_key', 'timeout']" in caplog.text
    assert ChatEgtLM(model_name="x/y").model == "x/y"
    params = ChatEgtLM(max_tokens=5, stop=["."])._get_ls_params(model="override")
    assert params["ls_model_name"] == "override" and params["ls_provider"] == "egtlm"
    assert ChatEgtLM()._identifying_params["model_name"] == "SmolLM2-135M-Instruct"


def test_bad_settings_and_call_arguments(chat):
    with pytest.raises(ValueError, match="greater than or equal to 0"):
        ChatEgtLM(temperature=-1)
    with pytest.raises(TypeError, match=r"unknown call arguments \['frequency_penalty'\]"):
        chat.invoke("hi", frequency_penalty=1.0)
    with pytest.raises(ValueError, match="not a bound tool"):
        chat.bind_tools([get_weather], tool_choice="nope")
    with pytest.raises(ValueError, match="text only"):
        chat.invoke([HumanMessage([{"type": "image", "url": "http://x/y.png"}])])


# --- messages -----------------------------------------------------------------------------------
def test_messages_map_to_chat_roles_with_tool_turns_in_words():
    messages = [
        SystemMessage("Be brief."),
        HumanMessage([{"type": "text", "text": "What is 1 + 2"}, "?"]),
        AIMessage(
            [
                {"type": "text", "text": "Let me add."},
                {"type": "tool_use", "id": "c1", "name": "add", "input": {}},
            ],
            tool_calls=[{"name": "add", "args": {"a": 1, "b": 2}, "id": "c1", "type": "tool_call"}],
        ),
        ToolMessage("3", tool_call_id="c1"),  # no name: taken from the call
        AIMessage("It is 3."),
        HumanMessage("And 2 + 2?"),
        AIMessage(
            "", tool_calls=[{"name": "add", "args": {"a": 2, "b": 2}, "id": "c2", "type": "tool_call"}]
        ),
        ToolMessage("Missing argument", tool_call_id="c2", name="add", status="error"),
        ToolMessage("4", tool_call_id="c2", name="add"),
    ]
    assert to_chat_messages(messages) == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is 1 + 2?"},
        {"role": "assistant", "content": 'Let me add.\nI will call add with {"a": 1, "b": 2}.'},
        {"role": "user", "content": "The tool add returned: 3\nUse it to answer my question."},
        {"role": "assistant", "content": "It is 3."},
        {"role": "user", "content": "And 2 + 2?"},
        {"role": "assistant", "content": 'I will call add with {"a": 2, "b": 2}.'},
        {
            "role": "user",
            "content": "The tool add failed: Missing argument\nThe tool add returned: 4\n"
            "Use them to answer my question.",
        },
    ]


def test_tools_are_described_in_the_system_prompt(chat):
    plan = plan_tools([_openai(get_weather)], "auto")
    merged = with_tools_prompt(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}], plan
    )
    assert merged[0]["content"].startswith("Be brief.\n\nYou can call these tools:")
    assert '"name": "get_weather"' in merged[0]["content"] and "answer normally" in merged[0]["content"]
    added = with_tools_prompt([{"role": "user", "content": "hi"}], plan_tools([_openai(add)], "any"))
    assert added[0]["role"] == "system" and "answer normally" not in added[0]["content"]


def test_tool_choice_forms():
    tools = [_openai(get_weather), _openai(add)]
    assert plan_tools(tools, None).forced == () and plan_tools(tools, "none") is None
    assert len(plan_tools(tools, "any").forced) == 2 == len(plan_tools(tools, True).forced)
    assert len(plan_tools(tools, "required").forced) == 2
    by_dict = plan_tools(tools, {"type": "function", "function": {"name": "add"}})
    assert (
        [t["function"]["name"] for t in by_dict.forced]
        == ["add"]
        == [t["function"]["name"] for t in plan_tools(tools, "add").forced]
    )


def test_auto_mode_parses_a_whole_answer_that_is_a_call():
    names = {"add", "get_weather"}
    call = '{"name": "add", "arguments": {"a": 1, "b": 2}}'
    for text in (call, f"```json\n{call}\n```", f"<tool_call>{call}</tool_call>", f"[{call}]"):
        (parsed,) = parse_calls(text, names)
        assert parsed.name == "add" and parsed.arguments == {"a": 1, "b": 2} and parsed.id.startswith("call_")
    assert parse_calls('{"name": "add", "arguments": "{\\"a\\": 1}"}', names)[0].arguments == {"a": 1}
    for text in ("The answer is 3.", '{"name": "other", "arguments": {}}', f"Sure: {call}", "{broken"):
        assert parse_calls(text, names) is None


# --- generation on the tiny model -----------------------------------------------------------------
def test_invoke_reports_usage_and_metadata(chat):
    lm = chat.client
    reference = lm.chat([{"role": "user", "content": "hello"}], max_new_tokens=24)
    message = chat.invoke("hello")
    assert message.content == reference.text
    assert message.usage_metadata == {
        "input_tokens": reference.prompt_tokens,
        "output_tokens": reference.completion_tokens,
        "total_tokens": reference.total_tokens,
    }
    meta = message.response_metadata
    assert meta["model_name"] == chat.model and meta["finish_reason"] in ("stop", "length")
    assert set(meta["egtlm"]) >= {"ttft_s", "reused_tokens", "prefilled_tokens"}
    assert meta["egtlm"]["prefilled_tokens"] == reference.prompt_tokens


def test_stream_matches_invoke_and_ends_with_one_usage_chunk(chat):
    chunks = list(chat.stream("hello"))
    invoked = chat.invoke("hello")
    assert "".join(str(c.content) for c in chunks) == invoked.content
    assert chunks[-1].chunk_position == "last" and chunks[-1].usage_metadata == invoked.usage_metadata
    assert [c for c in chunks if c.usage_metadata] == [chunks[-1]]
    assert chunks[-1].response_metadata["model_name"] == chat.model


def test_stop_sequences_end_the_answer(chat):
    full = chat.invoke("hello").content
    stop = next(full[i : i + 2] for i in range(3, len(full) - 2) if full.find(full[i : i + 2]) == i)
    cut = full[: full.find(stop)]
    assert chat.invoke("hello", stop=[stop]).content == cut
    assert "".join(str(c.content) for c in chat.stream("hello", stop=[stop])) == cut
    assert chat.model_copy(update={"stop": [stop]}).invoke("hello").content == cut


def _slowed(client: EgtLM, monkeypatch, delay: float = 0.3) -> None:
    """Make the model's chat calls sleep (blocking) so a loop blocked by them would show."""
    chat_fn, stream_fn = client.chat, client.stream_chat

    def slow_chat(*args, **kwargs):
        time.sleep(delay)
        return chat_fn(*args, **kwargs)

    def slow_stream(*args, **kwargs):
        inner = stream_fn(*args, **kwargs)

        def pieces():
            time.sleep(delay)
            yield from inner

        return ChatStream(pieces(), inner.result)

    monkeypatch.setattr(client, "chat", slow_chat)
    monkeypatch.setattr(client, "stream_chat", slow_stream)


def _ticks_while(coro_factory) -> tuple[int, object]:
    async def main():
        ticks = 0
        done = asyncio.Event()

        async def ticker():
            nonlocal ticks
            while not done.is_set():
                await asyncio.sleep(0.01)
                ticks += 1

        task = asyncio.create_task(ticker())
        result = await coro_factory()
        done.set()
        await task
        return ticks, result

    return asyncio.run(main())


def test_ainvoke_and_astream_run_off_the_event_loop(chat, monkeypatch):
    _slowed(chat.client, monkeypatch)
    ticks, message = _ticks_while(lambda: chat.ainvoke("hello"))
    assert ticks >= 10 and message.content

    async def collect():
        return [c async for c in chat.astream("hello")]

    ticks, chunks = _ticks_while(collect)
    assert ticks >= 10 and chunks[-1].chunk_position == "last"


def test_async_errors_reach_the_caller_and_early_exit_is_clean(chat):
    async def stream_all():
        return [c async for c in chat.astream("hi", frequency_penalty=1.0)]

    with pytest.raises(TypeError, match="unknown call arguments"):
        asyncio.run(stream_all())
    with pytest.raises(TypeError, match="unknown call arguments"):
        asyncio.run(chat.ainvoke("hi", frequency_penalty=1.0))

    async def first_only():
        async for chunk in chat.astream("Tell me about the fox"):
            return chunk

    assert asyncio.run(first_only()).content


def test_async_results_equal_sync(chat):
    async def main():
        return await asyncio.gather(chat.ainvoke("hello"), _collect(chat.astream("hello")))

    message, chunks = asyncio.run(main())
    expected = chat.invoke("hello").content
    assert message.content == expected == "".join(str(c.content) for c in chunks)


async def _collect(stream):
    return [c async for c in stream]


def test_concurrent_invokes_agree(chat):
    prompts = ["hello", "Tell me about the fox", "hello", "A cat sat"]
    expected = [chat.invoke(p).content for p in prompts]
    results: list = [None] * len(prompts)

    def work(i: int) -> None:
        results[i] = chat.invoke(prompts[i]).content

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(prompts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == expected
    assert [m.content for m in chat.batch(prompts)] == expected
    assert [m.content for m in asyncio.run(chat.abatch(prompts))] == expected


def test_per_call_model_override(tiny_model_dirs, chat):
    other = str(tiny_model_dirs["qwen2"])
    message = chat.invoke("hello", model=other)
    assert message.response_metadata["model_name"] == other
    assert message.usage_metadata["output_tokens"] > 0


def test_changed_model_field_takes_effect(tiny_model_dirs, chat):
    other = chat.model_copy(update={"model": str(tiny_model_dirs["mistral"])})
    assert other.client is not chat.client and other.client.source.path == str(tiny_model_dirs["mistral"])


def test_cache_reuse_is_reported(tiny, tmp_path):
    # Its own copy of the weights: handed-out documents are shared by every EgtLM on the same loaded
    # model, and earlier tests in the process hand this one out on the shared tiny model.
    own = shutil.copytree(tiny["model"], tmp_path / "own")
    lm = EgtLM(str(own), cache_store=MemoryTier(), **FLOAT32)
    doc = "Paris is the capital of France. Berlin is the capital of Germany."
    lm.index([doc])
    chat = ChatEgtLM(model=lm, max_tokens=8)
    prompt = f"Documents:\n{doc}\n\nQuestion: capital of France?"
    first = chat.invoke([HumanMessage(prompt)])  # indexed but never handed out: not a candidate
    assert first.response_metadata["egtlm"]["reused_tokens"] == 0
    assert [hit.document.text for hit in lm.search("capital of France?", k=1)] == [doc]  # hands it out
    message = chat.invoke([HumanMessage(f"Documents:\n{doc}\n\nQuestion: capital of France?")])
    reused = message.response_metadata["egtlm"]["reused_tokens"]
    assert reused > 0 and message.usage_metadata["input_token_details"]["cache_read"] == reused
    assert message.response_metadata["egtlm"]["prefilled_tokens"] < message.usage_metadata["input_tokens"]
    off = chat.invoke([HumanMessage(f"Documents:\n{doc}\n\nQuestion: capital of France?")], reuse_cache=False)
    assert (
        off.response_metadata["egtlm"]["reused_tokens"] == 0
        and "input_token_details" not in off.usage_metadata
    )


# --- forced tool calls and structured output: valid even from a random model -----------------------
@pytest.mark.parametrize(
    "tool_choice", ["any", "required", True, "add", {"type": "function", "function": {"name": "add"}}]
)
def test_forced_tool_calls_always_parse_and_validate(tiny, tool_choice):
    chat = ChatEgtLM(**tiny, max_tokens=64)
    bound = chat.bind_tools([get_weather, add], tool_choice=tool_choice)
    schemas = {t.name: t.tool_call_schema.model_json_schema() for t in (get_weather, add)}
    for prompt in ("hello", "What is 1 + 2?", "Weather in Paris?"):
        message = bound.invoke(prompt)
        (call,) = message.tool_calls
        assert call["id"] and call["type"] == "tool_call" and message.content == ""
        jsonschema.validate(call["args"], schemas[call["name"]])
        if tool_choice in ("add",) or isinstance(tool_choice, dict):
            assert call["name"] == "add"
        assert message.response_metadata["finish_reason"] == "tool_calls"
        full = None
        for chunk in bound.stream(prompt):
            full = chunk if full is None else full + chunk
        assert [(c["name"], c["args"]) for c in full.tool_calls] == [(call["name"], call["args"])]


def test_forced_call_needs_room(tiny):
    bound = ChatEgtLM(**tiny, max_tokens=3).bind_tools([add], tool_choice="add")
    with pytest.raises(ValueError, match="too small for this schema"):
        bound.invoke("hello")


@pytest.mark.parametrize("method", ["json_schema", "function_calling", "json_mode"])
@pytest.mark.parametrize(
    "schema", [Person, PersonDict, Person.model_json_schema()], ids=["pydantic", "typeddict", "dict"]
)
def test_structured_output_validates(tiny, method, schema):
    structured = ChatEgtLM(**tiny, max_tokens=96).with_structured_output(schema, method=method)
    for prompt in ("hello", "Alice is 31 and lives in Rome."):
        result = structured.invoke(prompt)
        if schema is Person:
            assert isinstance(result, Person)
        else:
            jsonschema.validate(
                result, Person.model_json_schema() if isinstance(schema, dict) else _typeddict_schema()
            )
    streamed = list(structured.stream("hello"))
    assert streamed and (
        isinstance(streamed[-1], Person) if schema is Person else isinstance(streamed[-1], dict)
    )


def test_structured_output_include_raw_and_json_mode_without_schema(tiny):
    chat = ChatEgtLM(**tiny, max_tokens=64)
    out = chat.with_structured_output(Person, include_raw=True).invoke("hello")
    assert (
        isinstance(out["raw"], AIMessage)
        and isinstance(out["parsed"], Person)
        and out["parsing_error"] is None
    )
    assert isinstance(chat.with_structured_output(None, method="json_mode").invoke("hello"), dict)
    with pytest.raises(ValueError, match="needs a schema"):
        chat.with_structured_output(None)
    with pytest.raises(ValueError, match="Unknown method"):
        chat.with_structured_output(Person, method="xml")


# --- the default model ------------------------------------------------------------------------------
@pytest.mark.slow
def test_default_model_forced_call_and_structured_methods():
    chat = ChatEgtLM(max_tokens=64)
    call = chat.bind_tools([add, get_weather], tool_choice="add").invoke("What is 17 + 25?").tool_calls[0]
    assert call["name"] == "add" and set(call["args"]) == {"a", "b"}
    for method in ("json_schema", "function_calling", "json_mode"):
        person = chat.with_structured_output(Person, method=method).invoke("Alice is 31 years old.")
        assert isinstance(person, Person)


@pytest.mark.slow
def test_default_model_ainvoke_keeps_the_loop_running():
    chat = ChatEgtLM(max_tokens=16)
    chat.invoke("hi")  # load first: loading also happens off the loop, but takes longer than a reply
    start = time.perf_counter()
    ticks, message = _ticks_while(lambda: chat.ainvoke("Hello"))
    elapsed = time.perf_counter() - start
    assert message.content and ticks >= 0.5 * elapsed / 0.01


def _openai(t) -> dict:
    from langchain_core.utils.function_calling import convert_to_openai_tool

    return convert_to_openai_tool(t)


def _typeddict_schema() -> dict:
    from langchain_core.utils.function_calling import convert_to_json_schema

    return convert_to_json_schema(PersonDict)


def test_json_helper_round_trip():
    """Tool call arguments stream as JSON text and merge back to the same dict."""
    from langchain_egtlm.chat_models import _json

    args = {"name": "你好", "n": 1}
    assert json.loads(_json(args)) == args and "你好" in _json(args)


def test_a_model_without_rope_chats_with_reuse_on(tmp_path):
    """GPT-2 has learned positions, no RoPE: reuse_cache=True (the default) must still answer."""
    from tiny_models import build_tokenizer
    from transformers import GPT2Config, GPT2LMHeadModel

    tok = build_tokenizer()
    config = GPT2Config(
        vocab_size=len(tok),
        n_embd=32,
        n_layer=2,
        n_head=2,
        n_positions=256,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    GPT2LMHeadModel(config).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    chat = ChatEgtLM(model=str(tmp_path), model_kwargs=FLOAT32, max_tokens=4)
    assert chat.reuse_cache
    message = chat.invoke("hi")
    assert message.usage_metadata["output_tokens"] >= 1
    assert message.response_metadata["egtlm"]["reused_tokens"] == 0  # nothing to splice, nothing refused


@tool
def send_greeting_message(greeting: str) -> str:
    """Send a greeting message to the user."""
    return greeting


@pytest.mark.slow
def test_default_model_forced_call_keeps_its_arguments_under_modest_budgets():
    """The call takes ~29 tokens; every budget from 32 up must leave its argument what the model
    writes with room to spare (measuring the closing need from the start gave ' ' at 48)."""
    greetings = {}
    for budget in (32, 40, 48, 64, 96, 128):
        bound = ChatEgtLM(max_tokens=budget).bind_tools([send_greeting_message], tool_choice="any")
        message = bound.invoke("Greet me")
        assert message.tool_calls, (budget, message.invalid_tool_calls)
        greetings[budget] = message.tool_calls[0]["args"]["greeting"]
        assert message.usage_metadata["output_tokens"] <= budget
    assert all(g.strip() for g in greetings.values()), greetings
    assert all(greetings[b] == greetings[128] for b in (40, 48, 64, 96)), greetings
