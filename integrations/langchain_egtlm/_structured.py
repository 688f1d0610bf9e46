"""`with_structured_output` for `ChatEgtLM`: a grammar-constrained call plus LangChain's parsers."""

from __future__ import annotations

from operator import itemgetter
from typing import TYPE_CHECKING, Any

from langchain_core.output_parsers import JsonOutputParser, PydanticOutputParser
from langchain_core.output_parsers.openai_tools import JsonOutputKeyToolsParser, PydanticToolsParser
from langchain_core.runnables import Runnable, RunnableMap, RunnablePassthrough
from langchain_core.utils.function_calling import convert_to_json_schema, convert_to_openai_tool
from langchain_core.utils.pydantic import is_basemodel_subclass

if TYPE_CHECKING:
    from .chat_models import ChatEgtLM

METHODS = ("json_schema", "function_calling", "json_mode")


def structured_runnable(
    chat: ChatEgtLM, schema: Any, method: str, include_raw: bool, strict: bool | None
) -> Runnable:
    """`chat` bound to a grammar for `schema`, piped into the parser that returns the schema's type.

    json_schema: decoding follows the schema itself. function_calling: the schema is a forced tool
    (described in the system prompt, call grammar-constrained). json_mode: any JSON object, or the
    schema's when one is given, so the parse into that schema cannot fail on structure.
    """
    if method not in METHODS:
        raise ValueError(f"Unknown method {method!r}; expected one of {METHODS}.")
    if schema is None and method != "json_mode":
        raise ValueError(f"method={method!r} needs a schema; use method='json_mode' for any JSON object.")
    is_pydantic = isinstance(schema, type) and is_basemodel_subclass(schema)
    trace = {"kwargs": {"method": method, "strict": strict}, "schema": schema} if schema is not None else None
    if method == "function_calling":
        name = convert_to_openai_tool(schema)["function"]["name"]
        llm: Runnable = chat.bind_tools(
            [schema], tool_choice=name, strict=strict, ls_structured_output_format=trace
        )
        parser: Runnable = (
            PydanticToolsParser(tools=[schema], first_tool_only=True)
            if is_pydantic
            else JsonOutputKeyToolsParser(key_name=name, first_tool_only=True)
        )
    else:
        json_schema = convert_to_json_schema(schema) if schema is not None else None
        bound: dict[str, Any] = {"response_format": {"type": method, "schema": json_schema}}
        if trace is not None:
            bound["ls_structured_output_format"] = trace
        llm = chat.bind(**bound)
        parser = PydanticOutputParser(pydantic_object=schema) if is_pydantic else JsonOutputParser()
    if not include_raw:
        return llm | parser
    parsed = RunnablePassthrough.assign(parsed=itemgetter("raw") | parser, parsing_error=lambda _: None)
    fallback = RunnablePassthrough.assign(parsed=lambda _: None)
    return RunnableMap(raw=llm) | parsed.with_fallbacks([fallback], exception_key="parsing_error")
