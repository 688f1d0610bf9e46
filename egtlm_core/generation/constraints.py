"""What `tools` and `response_format` ask of one chat: the prompt, the grammar, the stop rule, and
the calls or object read back from the answer.

The one place that turns OpenAI-style tools and response formats into a generation, so that
`EgtLM.chat`, and through it the LangChain and LlamaIndex chat models and the server's chat route,
do the same thing (they only translate their own types):

- bound tools are described in the system prompt (`tools.with_tools_prompt`); a forcing
  `tool_choice` constrains decoding to one call (`constrained.tool_call_schema`);
- a JSON `response_format` (when no tool is in play) constrains decoding to its schema, or to any
  JSON object;
- under a grammar there are no stop strings: one inside the JSON would cut it, and the grammar ends
  the output itself;
- the answer's calls land on `result.tool_calls`, a parsed JSON answer on `result.parsed`; while
  streaming, text that may be a call is held back until it can be parsed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .constrained import JsonGrammar, json_grammar, tool_call_schema
from .tools import ToolPlan, looks_like_call, parse_calls, plan_tools, with_tools_prompt

RESPONSE_TYPES = ("text", "json_object", "json_schema")


def check_tools(tools: Any) -> tuple[dict[str, Any], ...]:
    """Tools as OpenAI-format dicts ({"type": "function", "function": {"name", ...}}); a bare
    function dict ({"name", "description", "parameters"}) is wrapped."""
    if tools is None:
        return ()
    if isinstance(tools, (str, Mapping)) or not isinstance(tools, Sequence):
        raise TypeError(f"tools must be a list of tool dicts, got {type(tools).__name__}.")
    checked = []
    for i, tool in enumerate(tools):
        fn = tool.get("function", tool) if isinstance(tool, Mapping) else None
        if not isinstance(fn, Mapping) or not isinstance(fn.get("name"), str):
            raise ValueError(
                f"tools[{i}] must be {{'type': 'function', 'function': {{'name': ..., 'parameters': ...}}}} "
                f"or a function dict with a 'name', got {tool!r:.200}."
            )
        checked.append({"type": "function", "function": dict(fn)})
    return tuple(checked)


def response_schema(response_format: Any) -> tuple[bool, dict[str, Any] | None]:
    """(whether the answer must be JSON, its schema or None for any JSON object).

    Takes OpenAI's shapes: None or {"type": "text"} (free text), {"type": "json_object"} (any JSON
    object), {"type": "json_schema", "json_schema": {"name": ..., "schema": {...}}}. Both JSON types
    also take a "schema" key beside "type" (a schema to follow, egtlm's shorthand).
    """
    if response_format is None:
        return False, None
    if not isinstance(response_format, Mapping):
        raise TypeError(
            "response_format must be a dict such as {'type': 'json_object'}, got "
            f"{type(response_format).__name__}."
        )
    kind = response_format.get("type")
    if kind not in RESPONSE_TYPES:
        raise ValueError(f"Unknown response_format type {kind!r}; expected one of {RESPONSE_TYPES}.")
    if kind == "text":
        return False, None
    schema = response_format.get("schema")
    if kind == "json_schema" and schema is None:
        spec = response_format.get("json_schema")
        if not isinstance(spec, Mapping):
            raise ValueError(
                "response_format json_schema needs a json_schema object: "
                "{'type': 'json_schema', 'json_schema': {'name': ..., 'schema': {...}}}."
            )
        schema = spec.get("schema")
    if schema is not None and not isinstance(schema, Mapping):
        raise TypeError(f"A response_format schema must be a dict, got {type(schema).__name__}.")
    return True, None if schema is None else dict(schema)


@dataclass(frozen=True)
class OutputConstraint:
    """One chat's tools and response format, resolved against the model's tokenizer."""

    tools: ToolPlan | None = None
    grammar: JsonGrammar | None = None
    json_output: bool = False  # a JSON response_format: the answer is parsed onto `result.parsed`

    @classmethod
    def resolve(
        cls, tokenizer: Any, model: Any, tools: Sequence[Any], tool_choice: Any, response_format: Any
    ) -> OutputConstraint:
        """Bound tools win over a response format (a forced call is itself a JSON answer)."""
        plan = plan_tools(tools, tool_choice)
        if plan is not None:
            if not plan.forced:
                return cls(plan)
            return cls(plan, json_grammar(tokenizer, tool_call_schema(plan.forced), model=model))
        wants_json, schema = response_schema(response_format)
        if not wants_json:
            return cls()
        return cls(None, json_grammar(tokenizer, schema, model=model), json_output=True)

    @property
    def active(self) -> bool:
        return self.tools is not None or self.grammar is not None

    def prompt(self, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The messages with the tools described in the system message."""
        return messages if self.tools is None else with_tools_prompt(messages, self.tools)

    def stop(self, stop: Sequence[str] | None) -> tuple[str, ...]:
        """The one rule: no stop strings under a grammar (one inside the JSON would cut it, and the
        grammar ends the output itself)."""
        return () if self.grammar is not None else tuple(stop or ())

    def processors(self, given: Any, max_new_tokens: int) -> Any:
        """The caller's logits processors plus a fresh grammar processor (raises ValueError when the
        budget cannot fit the schema's shortest output)."""
        if self.grammar is None:
            return given
        return [*(given or ()), self.grammar.processor(max_new_tokens=max_new_tokens)]

    def finish(self, result: Any) -> None:
        """Read the finished answer: tool calls onto `result.tool_calls`, JSON onto `result.parsed`."""
        if self.tools is not None:
            calls = parse_calls(result.text, self.tools.names) if result.text else None
            result.tool_calls = calls or []
            if not calls and self.tools.forced:  # the grammar guarantees a call unless it was cut short
                result.tool_call_error = (
                    f"The forced tool call did not complete (finish_reason {result.finish_reason!r}); "
                    "allow more max_new_tokens."
                )
        if self.json_output:
            try:
                result.parsed = json.loads(result.text)
            except (json.JSONDecodeError, ValueError):
                result.parsed = None

    def hold(self, pieces: Iterator[str], result: Any) -> Iterator[str]:
        """Streamed pieces with a possible tool call held back; `finish(result)` runs at the end.

        With a forced call everything is held; with "auto" the text is held once its first
        non-space character could start a call, and given back at the end if it was not one.
        """
        forced = self.tools is not None and bool(self.tools.forced)
        undecided, hold, held = self.tools is not None and not forced, forced, ""
        try:
            for piece in pieces:
                if hold or undecided:
                    held += piece
                    if undecided and held.strip():
                        undecided, hold = False, looks_like_call(held)
                        if not hold:
                            yield held
                            held = ""
                    continue
                yield piece
        finally:
            close = getattr(pieces, "close", None)
            if close is not None:  # leaving early stops the generation within one token
                close()
        self.finish(result)
        if held and not result.tool_calls:
            yield held
