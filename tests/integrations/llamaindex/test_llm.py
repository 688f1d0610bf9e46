"""`EgtLMLLM`: LlamaIndex's LLM interface over `EgtLM.chat` (tiny random model: garbage text, which is
the hard case for the grammar: every forced call and structured result must still validate)."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from li_support import FLOAT32
from llama_index.core.base.llms.types import ChatMessage, MessageRole
from llama_index.core.llms.function_calling import FunctionCallingLLM
from llama_index.core.llms.llm import LLM
from llama_index.core.prompts import PromptTemplate
from llama_index.core.tools import FunctionTool
from llama_index.llms.egtlm import EgtLMLLM
from pydantic import BaseModel

from egtlm_core import EgtLM


def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def get_weather(location: str) -> str:
    """Get the weather at a location."""
    return "sunny"


class Person(BaseModel):
    """A person."""

    name: str
    age: int


@pytest.fixture(scope="module")
def llm(tiny_llama_dir) -> EgtLMLLM:
    return EgtLMLLM(model=str(tiny_llama_dir), model_kwargs=FLOAT32, max_new_tokens=12, reuse_cache=False)


def test_is_a_function_calling_llm_with_metadata(llm):
    assert isinstance(llm, FunctionCallingLLM) and isinstance(llm, LLM)
    assert EgtLMLLM.class_name() == "EgtLMLLM" == llm.to_dict()["class_name"]
    meta = llm.metadata
    assert meta.context_window == llm.client.model.config.max_position_embeddings
    assert meta.num_output == 12 and meta.is_chat_model and meta.is_function_calling_model
    assert EgtLMLLM(context_window=1000).metadata.context_window == 1000  # no load needed
    assert EgtLMLLM()._lazy.loaded is False  # construction loads nothing


def test_complete_and_chat_are_egtlm_chat(llm, tiny_llama_dir):
    expected = EgtLM(str(tiny_llama_dir), **FLOAT32).chat("hello", max_new_tokens=12).text
    assert llm.complete("hello").text == expected
    response = llm.chat([ChatMessage(role=MessageRole.USER, content="hello")])
    assert response.message.content == expected and response.message.role == MessageRole.ASSISTANT
    stats = response.additional_kwargs["egtlm"]
    assert stats["completion_tokens"] == response.additional_kwargs["completion_tokens"] > 0
    assert stats["reuse_cache"] is False and stats["reused_tokens"] == 0


def test_system_prompt_reaches_the_model(llm, tiny_llama_dir):
    with_system = EgtLMLLM(model=str(tiny_llama_dir), model_kwargs=FLOAT32, system_prompt="Be brief.")
    text = with_system.prompt_text([ChatMessage(role=MessageRole.USER, content="hi")])
    assert text.index("Be brief.") < text.index("hi")


def test_streams_equal_the_whole_answer(llm):
    whole = llm.complete("Tell me about the fox").text
    chunks = list(llm.stream_complete("Tell me about the fox"))
    assert "".join(c.delta for c in chunks) == whole == chunks[-1].text
    assert "egtlm" in chunks[-1].additional_kwargs
    messages = [ChatMessage(role=MessageRole.USER, content="Tell me about the fox")]
    assert "".join(c.delta or "" for c in llm.stream_chat(messages)) == whole


def test_async_variants_equal_sync_and_keep_the_loop_running(llm, monkeypatch):
    messages = [ChatMessage(role=MessageRole.USER, content="hello")]
    expected = llm.complete("hello").text
    lm = llm.client
    real = lm.chat

    def slow(*args, **kwargs):
        time.sleep(0.3)
        return real(*args, **kwargs)

    async def main():
        ticks = 0

        async def tick():
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        ticker = asyncio.create_task(tick())
        done = await asyncio.gather(llm.achat(messages), llm.acomplete("hello"))
        ticker.cancel()
        streamed = [c async for c in await llm.astream_chat(messages)]
        completed = [c async for c in await llm.astream_complete("hello")]
        return ticks, done, streamed, completed

    monkeypatch.setattr(lm, "chat", slow)
    ticks, (chat, complete), streamed, completed = asyncio.run(main())
    assert ticks >= 10  # the loop ran while both generations slept in worker threads
    assert chat.message.content == complete.text == expected
    assert "".join(c.delta or "" for c in streamed) == expected == completed[-1].text


def test_unknown_call_arguments_are_refused(llm):
    with pytest.raises(TypeError, match="unknown call arguments"):
        llm.complete("hi", frequency_penalty=1.0)


@pytest.mark.parametrize("tools", [[add], [get_weather]])  # two tools outgrow the tiny context
def test_forced_tool_calls_parse_and_validate(llm, tools):
    tools = [FunctionTool.from_defaults(fn=f) for f in tools]
    forced = EgtLMLLM(**{**llm.model_dump(include={"model", "model_kwargs"}), "max_new_tokens": 48})
    response = forced.chat_with_tools(tools, user_msg="What is 17 + 25?", tool_required=True)
    (call,) = forced.get_tool_calls_from_response(response)
    tool = {t.metadata.name: t for t in tools}[call.tool_name]
    tool.metadata.fn_schema.model_validate(call.tool_kwargs)  # the grammar guarantees a valid call
    assert response.message.content == ""


def test_no_tool_call_is_an_error_when_asked_for(llm):
    response = llm.chat_with_tools([FunctionTool.from_defaults(fn=add)], user_msg="hello")
    assert llm.get_tool_calls_from_response(response, error_on_no_tool_call=False) == []
    with pytest.raises(ValueError, match="Expected a tool call"):
        llm.get_tool_calls_from_response(response)


def test_tool_turns_in_history_are_words():
    from llama_index.core.llms.llm import ToolSelection
    from llama_index.llms.egtlm._messages import to_chat_messages

    call = ToolSelection(tool_id="call_1", tool_name="add", tool_kwargs={"a": 1, "b": 2})
    history = [
        ChatMessage(role=MessageRole.ASSISTANT, content="", additional_kwargs={"tool_calls": [call]}),
        ChatMessage(role=MessageRole.TOOL, content="3", additional_kwargs={"name": "add"}),
    ]
    assert to_chat_messages(history) == [
        {"role": "assistant", "content": 'I will call add with {"a": 1, "b": 2}.'},
        {"role": "user", "content": "The tool add returned: 3"},
    ]


def test_structured_predict_is_grammar_constrained(tiny_llama_dir):
    llm = EgtLMLLM(model=str(tiny_llama_dir), model_kwargs=FLOAT32, max_new_tokens=48)
    prompt = PromptTemplate("Describe {who} as a person.")
    person = llm.structured_predict(Person, prompt, who="Ada")
    assert isinstance(person, Person)
    assert isinstance(asyncio.run(llm.astructured_predict(Person, prompt, who="Ada")), Person)


def test_concurrent_calls_agree(llm):
    prompts = ["hello", "Tell me about the fox", "A cat sat", "hello"]
    expected = [llm.complete(p).text for p in prompts]
    results: list = [None] * len(prompts)

    def work(i: int) -> None:
        results[i] = llm.complete(prompts[i]).text

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(prompts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == expected
