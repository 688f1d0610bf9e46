"""What the 135M default model does with LangChain tool calling and structured output, counted.

Each row is a success rate over a small, fixed set of prompts (greedy decoding is deterministic, so
"N runs" means N different prompts, or N seeds at temperature 0.7 where stated):

    auto_call          tool_choice="auto": the model calls the bound tool (needs no grammar)
    auto_call_sampled  the standard suite's agent-loop prompt, 10 seeds at temperature 0.7
    result_used        after a tool result, the answer uses it: our rendering (call in words, result
                       as a user turn) vs the "tool" role with the JSON call in the history
    forced_valid       tool_choice="any"/a name: the call parses and its args validate
    forced_args_right  ... and the argument is the one in the question (magic_function(n) -> n)
    structured_valid   with_structured_output, each method: the result validates against the schema
    free_json_valid    the same requests without a grammar (asked for JSON in the prompt)

    python benchmarks/langchain_tool_calling.py     # ~5 minutes on 2 busy CPU cores

Everything goes through `ChatEgtLM` as an application would call it; the alternative rendering of a
tool round trip is built from LangChain messages that ChatEgtLM passes through as they are (an
assistant message holding the JSON call, a `ChatMessage` with the "tool" role).

Prints the table and writes docs/benchmarks/langchain_tool_calling.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "integrations"):
    sys.path.insert(0, str(p))

import torch  # noqa: E402
from langchain_core.messages import AIMessage, BaseMessage, ChatMessage, HumanMessage, ToolMessage  # noqa: E402
from langchain_core.tools import tool  # noqa: E402
from langchain_egtlm import ChatEgtLM  # noqa: E402
from pydantic import BaseModel, Field, ValidationError  # noqa: E402

sys.path.insert(0, str(ROOT / "benchmarks"))
from _common import add_model_option, model_name  # noqa: E402


@tool
def get_weather(location: str) -> str:
    """Get the weather at a location."""
    return "It's sunny."


@tool
def my_adder_tool(a: int, b: int) -> int:
    """Takes two integers, a and b, and returns their sum."""
    return a + b


@tool
def lookup_population(city: str) -> str:
    """Population of a city."""
    return ""


@tool
def magic_function(input: int) -> int:
    """Applies a magic function to an input."""
    return input + 2


class Joke(BaseModel):
    """Joke to tell user."""

    setup: str = Field(description="question to set up a joke")
    punchline: str = Field(description="answer to resolve the joke")


class Person(BaseModel):
    """A person mentioned in the text."""

    name: str
    age: int


AUTO_PROMPTS = [
    (get_weather, "What is the weather in San Francisco, CA?"),
    (get_weather, "What's the weather like in Paris today?"),
    (get_weather, "Is it raining in London?"),
    (get_weather, "Tell me the weather in Tokyo."),
    (my_adder_tool, "What is 1 + 2?"),
    (my_adder_tool, "Add 17 and 25."),
    (lookup_population, "How many people live in Lyon?"),
    (lookup_population, "What is the population of Porto?"),
]
RESULT_CASES = [
    (my_adder_tool, "What is 1 + 2", {"a": 1, "b": 2}, json.dumps({"result": 3}), ["3"]),
    (my_adder_tool, "What is 17 + 25", {"a": 17, "b": 25}, "42", ["42"]),
    (
        get_weather,
        "What is the weather in San Francisco, CA?",
        {"location": "San Francisco, CA"},
        "It's sunny.",
        ["sunny"],
    ),
    (
        get_weather,
        "What is the weather in Oslo?",
        {"location": "Oslo"},
        "Heavy snow, -5 degrees.",
        ["snow", "-5"],
    ),
    (lookup_population, "How many people live in Lyon?", {"city": "Lyon"}, "522,250", ["522"]),
    (
        lookup_population,
        "What is the population of Porto?",
        {"city": "Porto"},
        "231,800 inhabitants",
        ["231"],
    ),
]
JOKE_PROMPTS = [f"Tell me a joke about {t}." for t in ("cats", "dogs", "the sea", "programmers")]
PERSON_PROMPTS = [
    "Alice is 31 years old and lives in Rome.",
    "My grandfather Bob turned 80 last week.",
    "Carla, aged 25, won the race.",
    "The report was written by Dan, who is 47.",
]


def rate(hits: int, n: int) -> str:
    return f"{hits}/{n}"


def auto_call(chat: ChatEgtLM) -> tuple[int, int]:
    hits = sum(bool(chat.bind_tools([t]).invoke(q).tool_calls) for t, q in AUTO_PROMPTS)
    return hits, len(AUTO_PROMPTS)


def auto_call_sampled(chat: ChatEgtLM, seeds: int = 10) -> tuple[int, int]:
    sampler = chat.model_copy(update={"temperature": 0.7}).bind_tools([get_weather])
    hits = 0
    for seed in range(seeds):
        torch.manual_seed(seed)
        hits += bool(sampler.invoke([HumanMessage("What is the weather in San Francisco, CA?")]).tool_calls)
    return hits, seeds


def ours(q: str, name: str, args: dict, result: str) -> list[BaseMessage]:
    """A tool round trip as LangChain holds it; ChatEgtLM writes the call in words and the result as
    a user turn."""
    call = {"name": name, "args": args, "id": "c1", "type": "tool_call"}
    return [
        HumanMessage(q),
        AIMessage("", tool_calls=[call]),
        ToolMessage(result, tool_call_id="c1", name=name),
    ]


def json_tool_role(q: str, name: str, args: dict, result: str) -> list[BaseMessage]:
    """The alternative: the JSON call as the assistant turn, the result in a "tool" role turn."""
    call = json.dumps({"name": name, "arguments": args})
    return [HumanMessage(q), AIMessage(call), ChatMessage(role="tool", content=result)]


def result_used(
    chat: ChatEgtLM, history: Callable[[str, str, dict, str], list[BaseMessage]]
) -> tuple[int, int]:
    hits = 0
    for t, q, args, res, wanted in RESULT_CASES:
        answer = chat.bind_tools([t]).invoke(history(q, t.name, args, res))
        hits += any(w.lower() in str(answer.content).lower() for w in wanted)
    return hits, len(RESULT_CASES)


FORCED_VALUES = [3, 7, 12, 42, 100, 5, 9, 250]


def forced(chat: ChatEgtLM) -> tuple[tuple[int, int], tuple[int, int]]:
    bound = chat.bind_tools([magic_function, get_weather], tool_choice="any")
    values = FORCED_VALUES
    valid = right = 0
    for n in values:
        calls = bound.invoke(f"What is the value of magic_function({n})? Use the tool.").tool_calls
        ok = len(calls) == 1 and (
            (calls[0]["name"] == "magic_function" and isinstance(calls[0]["args"].get("input"), int))
            or (calls[0]["name"] == "get_weather" and isinstance(calls[0]["args"].get("location"), str))
        )
        valid += ok
        right += ok and calls[0]["args"] == {"input": n}
    return (valid, len(values)), (right, len(values))


def structured(chat: ChatEgtLM) -> dict[str, tuple[int, int]]:
    out = {}
    cases = [(Joke, p) for p in JOKE_PROMPTS] + [(Person, p) for p in PERSON_PROMPTS]
    for method in ("json_schema", "function_calling", "json_mode"):
        hits = 0
        for schema, prompt in cases:
            result = chat.with_structured_output(schema, method=method, include_raw=True).invoke(prompt)
            hits += isinstance(result["parsed"], schema)
        out[method] = (hits, len(cases))
    hits = 0
    for schema, prompt in cases:
        keys = ", ".join(schema.model_fields)
        text = chat.invoke(f"{prompt}\nReturn only a JSON object with the keys {keys}.").content
        try:
            schema.model_validate_json(str(text).strip().strip("`").removeprefix("json").strip())
            hits += 1
        except (ValidationError, ValueError):
            pass
    out["free_json_valid"] = (hits, len(cases))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_model_option(parser)
    parser.add_argument("--max-tokens", type=int, default=64, help="new tokens per call")
    parser.add_argument("--seeds", type=int, default=10, help="sampled runs per prompt (auto_call_sampled)")
    parser.add_argument(
        "--limit", type=int, default=None, help="prompts per check (default: all; a smoke run)"
    )
    parser.add_argument("--dtype", default=None, help="EgtLM's torch_dtype (default: its 'auto')")
    parser.add_argument(
        "--out", type=Path, default=ROOT / "docs" / "benchmarks" / "langchain_tool_calling.json"
    )
    args = parser.parse_args(argv)
    if args.limit:
        global AUTO_PROMPTS, RESULT_CASES, FORCED_VALUES, JOKE_PROMPTS, PERSON_PROMPTS
        AUTO_PROMPTS, RESULT_CASES, FORCED_VALUES = (
            x[: args.limit] for x in (AUTO_PROMPTS, RESULT_CASES, FORCED_VALUES)
        )
        JOKE_PROMPTS, PERSON_PROMPTS = JOKE_PROMPTS[: args.limit], PERSON_PROMPTS[: args.limit]
    load = {"torch_dtype": args.dtype} if args.dtype else {}
    chat = ChatEgtLM(model=model_name(args), max_tokens=args.max_tokens, model_kwargs=load)
    start = time.perf_counter()
    rows: dict[str, str] = {}
    rows["auto_call"] = rate(*auto_call(chat))
    rows["auto_call_sampled"] = rate(*auto_call_sampled(chat, args.seeds))
    rows["result_used (ours: words + user turn)"] = rate(*result_used(chat, ours))
    rows["result_used (JSON call + tool role)"] = rate(*result_used(chat, json_tool_role))
    valid, right = forced(chat)
    rows["forced_valid"], rows["forced_args_right"] = rate(*valid), rate(*right)
    for name, value in structured(chat).items():
        rows[name if name == "free_json_valid" else f"structured_valid ({name})"] = rate(*value)
    width = max(map(len, rows))
    for name, value in rows.items():
        print(f"{name:<{width}}  {value}")
    print(f"({time.perf_counter() - start:.0f} s, model {chat.client!r})")
    out = args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    record = {"model": repr(chat.client), "max_tokens": args.max_tokens, "rates": rows}
    out.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
