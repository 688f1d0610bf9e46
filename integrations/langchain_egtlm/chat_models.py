"""`ChatEgtLM`: a LangChain chat model over `EgtLM.chat`, sharing weights and KV states with the
embedder and retriever of the same model."""

from __future__ import annotations

import difflib
import json
import logging
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any

from pydantic import ConfigDict, Field, PrivateAttr, model_validator

try:
    from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
    from langchain_core.language_models import BaseChatModel, LangSmithParams, LanguageModelInput
    from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
    from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
    from langchain_core.runnables import Runnable
    from langchain_core.tools import BaseTool
    from langchain_core.utils.function_calling import convert_to_openai_tool
except ImportError as err:  # pragma: no cover - the extra is missing
    raise ImportError("langchain_egtlm needs langchain-core: pip install 'egtlm[langchain]'") from err

from egtlm_core import RECOMPUTE_TOKENS, EgtLM
from egtlm_core.adapter_kit import LazyLM, display_name, new_call_id, plan_tools, shared_lm

from ._async import iterate_in_thread, run_in_thread
from ._messages import to_chat_messages
from ._request import Request, metadata
from ._structured import structured_runnable

logger = logging.getLogger(__name__)

DEFAULT_MAX_TOKENS = 256
# Per-call keyword arguments `_generate`/`_stream` understand (besides those `bind_tools` and
# `with_structured_output` bind).
_CALL_OPTIONS = ("model", "temperature", "max_tokens", "top_p", "reuse_cache", "recompute_tokens")
# Settings of hosted chat models (the standard suites pass some) that mean nothing locally: accepted
# with a warning. Any other unknown name is refused, so a typo never passes silently.
_IGNORED_SETTINGS = ("api_key", "base_url", "timeout", "request_timeout", "max_retries", "organization")


class ChatEgtLM(BaseChatModel):
    """Chat with the decoder model that also embeds, reusing the KV states of retrieved documents.

    Construction is cheap; the weights load on first use through the registry shared with
    `EgtLMEmbeddings`, so both hold one copy. With `reuse_cache=True` the states of documents the
    model's RAG engine knows (indexed, or returned by `EgtLMCacheRetriever`) are spliced in when their
    text appears in the prompt instead of being prefilled; `response_metadata["egtlm"]` reports what
    was reused and `usage_metadata["input_token_details"]["cache_read"]` counts those tokens.

    Tool calling and structured output are grammar-constrained (xgrammar) when forced, so even the
    135M default model returns calls and objects that validate against their schemas.

    Example:
        >>> from langchain_egtlm import ChatEgtLM
        >>> chat = ChatEgtLM(max_tokens=64)
        >>> chat.invoke("What is the capital of France?").content
        >>> chat.bind_tools([get_weather], tool_choice="any").invoke("Weather in Paris?").tool_calls
    """

    model_config = ConfigDict(extra="forbid", protected_namespaces=(), arbitrary_types_allowed=True)

    model: Any = None
    """A local path, `.gguf` file, hub id, an `EgtLM` instance, or None for the packaged default."""
    temperature: float = Field(default=0.0, ge=0.0)
    """Sampling temperature; 0 decodes greedily (deterministic)."""
    max_tokens: int | None = Field(default=None, ge=1)
    """Most tokens to generate (None: 256)."""
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    """Nucleus sampling mass (with temperature > 0)."""
    stop: list[str] | None = None
    """Stop strings: generation ends there and they are not returned."""
    streaming: bool = False
    """Stream tokens through callbacks when invoked."""
    reuse_cache: bool = True
    """Splice the stored KV states of known documents found in the prompt instead of prefilling them."""
    recompute_tokens: int = Field(default=RECOMPUTE_TOKENS, ge=0)
    """With reuse, recompute the first n tokens of each spliced document so they see the documents
    before them (default 32: most of full prefill's answer quality at k > 1 for n tokens of prefill
    per document; 0 splices every stored token)."""
    model_kwargs: dict[str, Any] = Field(default_factory=dict)
    """Loading arguments passed to `EgtLM` (torch_dtype, device, attn_implementation, ...)."""

    _lazy: LazyLM = PrivateAttr()

    @model_validator(mode="before")
    @classmethod
    def _check_names(cls, data: Any) -> Any:
        """Hosted-API settings are dropped with a warning; any other unknown name is an error."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        if "model_name" in data:  # the common alias in other integrations
            name = data.pop("model_name")
            data.setdefault("model", name)
        unknown = sorted(set(data) - set(cls.model_fields))
        ignored = [k for k in unknown if k in _IGNORED_SETTINGS]
        if ignored:
            logger.warning("ChatEgtLM runs locally and ignores %s.", ignored)
        wrong = [k for k in unknown if k not in _IGNORED_SETTINGS]
        if wrong:
            hints = [
                f"{w!r} -> {m[0]!r}"
                for w in wrong
                if (m := difflib.get_close_matches(w, cls.model_fields, 1))
            ]
            meant = f" (did you mean {', '.join(hints)}?)" if hints else ""
            raise ValueError(
                f"ChatEgtLM got unknown settings {wrong}{meant}; its settings are {sorted(cls.model_fields)}."
            )
        return {k: v for k, v in data.items() if k not in ignored}

    @model_validator(mode="after")
    def _build_client(self) -> ChatEgtLM:
        self._lazy = LazyLM(self.model, mode="unified", model_kwargs=self.model_kwargs)
        return self

    @property
    def client(self) -> EgtLM:
        """The `EgtLM` doing the work (loaded on first access; rebuilt if `model`/`model_kwargs` changed)."""
        if not self._lazy.matches(self.model, model_kwargs=self.model_kwargs):
            self._lazy = LazyLM(self.model, mode="unified", model_kwargs=self.model_kwargs)
        return self._lazy.get()

    @property
    def _llm_type(self) -> str:
        return "egtlm-chat"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {
            "model_name": display_name(self.model),
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "top_p": self.top_p,
            "stop": self.stop,
            "reuse_cache": self.reuse_cache,
            "recompute_tokens": self.recompute_tokens,
        }

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        model = kwargs.get("model", self.model)
        params = LangSmithParams(
            ls_provider="egtlm",
            ls_model_name=display_name(model),
            ls_model_type="chat",
            ls_temperature=kwargs.get("temperature", self.temperature),
        )
        max_tokens = kwargs.get("max_tokens", self.max_tokens)
        if max_tokens is not None:
            params["ls_max_tokens"] = max_tokens
        if stop or self.stop:
            params["ls_stop"] = stop or self.stop
        return params

    # --- requests -----------------------------------------------------------------------------------
    def _request(
        self, messages: list[BaseMessage], stop: list[str] | None, kwargs: dict[str, Any]
    ) -> Request:
        kwargs = dict(kwargs)
        tools, tool_choice = kwargs.pop("tools", None), kwargs.pop("tool_choice", None)
        response_format = kwargs.pop("response_format", None)
        unknown = sorted(set(kwargs) - set(_CALL_OPTIONS))
        if unknown:
            raise TypeError(
                f"ChatEgtLM got unknown call arguments {unknown}; it takes {list(_CALL_OPTIONS)}."
            )
        model = kwargs.get("model")
        lm = self.client if model is None else shared_lm(model, model_kwargs=self.model_kwargs)
        max_tokens = kwargs.get("max_tokens", self.max_tokens)
        options = {
            "max_new_tokens": DEFAULT_MAX_TOKENS if max_tokens is None else max_tokens,
            "temperature": kwargs.get("temperature", self.temperature),
            "top_p": kwargs.get("top_p", self.top_p),
            "stop": stop if stop is not None else self.stop,
            "reuse_cache": kwargs.get("reuse_cache", self.reuse_cache),
            "recompute_tokens": kwargs.get("recompute_tokens", self.recompute_tokens),
            "tools": tools or None,
            "tool_choice": tool_choice,
            # with_structured_output binds {"type": method, "schema": ...}: the schema's JSON, or any object
            "response_format": None
            if response_format is None
            else {"type": "json_object", "schema": response_format.get("schema")},
        }
        name = display_name(model if model is not None else self.model)
        return Request(lm, name, to_chat_messages(messages), options)

    @staticmethod
    def _tool_calls(result: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """(tool calls, invalid tool calls) of a finished generation, in LangChain's shapes."""
        calls = [
            {"name": c.name, "args": c.arguments, "id": c.id, "type": "tool_call"} for c in result.tool_calls
        ]
        if result.tool_call_error is None:
            return calls, []
        invalid = {"name": None, "args": result.text, "id": new_call_id(), "error": result.tool_call_error}
        return calls, [{**invalid, "type": "invalid_tool_call"}]

    def _generate_message(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None,
        kwargs: dict,
        cancel: threading.Event | None = None,
    ) -> AIMessage:
        req = self._request(messages, stop, kwargs)
        result = req.lm.chat(req.messages, **req.chat_kwargs(cancel))
        calls, invalid = self._tool_calls(result)
        usage, response = metadata(req, result, bool(calls))
        return AIMessage(
            content="" if calls else result.text,
            tool_calls=calls,
            invalid_tool_calls=invalid,
            usage_metadata=usage,  # type: ignore[arg-type]
            response_metadata=response,
        )

    # --- BaseChatModel ------------------------------------------------------------------------------
    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        message = self._generate_message(messages, stop, kwargs)
        return ChatResult(generations=[ChatGeneration(message=message)])

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        """`_generate` in a worker thread; cancelling the task stops the generation within one token."""
        message = await run_in_thread(
            lambda cancelled: self._generate_message(messages, stop, kwargs, cancelled), "egtlm-ainvoke"
        )
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _chunks(
        self, messages: list[BaseMessage], stop: list[str] | None, kwargs: dict, cancelled: threading.Event
    ) -> Iterator[ChatGenerationChunk]:
        """Text chunks as generated, then one last chunk with usage, metadata and any tool calls
        (`EgtLM.stream_chat` holds back text that may be a call; a call comes whole at the end)."""
        req = self._request(messages, stop, kwargs)
        stream = req.lm.stream_chat(req.messages, **req.chat_kwargs(cancelled))
        try:  # an early exit (break, a closed generator, a cancelled task) ends generate at once
            yield from self._pieces_then_last(req, stream, cancelled)
        finally:
            stream.close()

    def _pieces_then_last(
        self, req: Request, stream: Any, cancelled: threading.Event
    ) -> Iterator[ChatGenerationChunk]:
        for piece in stream:  # the core holds back text that may be a tool call
            if cancelled.is_set():
                return
            yield ChatGenerationChunk(message=AIMessageChunk(content=piece))
        calls, invalid = self._tool_calls(stream.result)
        usage, response = metadata(req, stream.result, bool(calls))
        call_chunks = [
            {
                "name": c["name"],
                "args": _json(c["args"]),
                "id": c["id"],
                "index": i,
                "type": "tool_call_chunk",
            }
            for i, c in enumerate(calls)
        ]
        last = AIMessageChunk(
            content="",
            tool_call_chunks=call_chunks,  # type: ignore[arg-type]
            invalid_tool_calls=invalid,  # type: ignore[arg-type]
            usage_metadata=usage,  # type: ignore[arg-type]
            response_metadata=response,
            chunk_position="last",
        )
        yield ChatGenerationChunk(message=last)

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        for chunk in self._chunks(messages, stop, kwargs, threading.Event()):
            if run_manager is not None and chunk.text:
                run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        """`_stream` in a worker thread feeding an asyncio queue: the event loop never waits on the model."""
        chunks = iterate_in_thread(
            lambda cancelled: self._chunks(messages, stop, kwargs, cancelled), "egtlm-astream"
        )
        async for chunk in chunks:
            if run_manager is not None and chunk.text:
                await run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk

    # --- tools and structured output ----------------------------------------------------------------
    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable | BaseTool],
        *,
        tool_choice: dict | str | bool | None = None,
        strict: bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Bind tools; a forcing `tool_choice` grammar-constrains the answer to a valid call.

        Args:
            tools: anything `convert_to_openai_tool` takes (functions, `@tool`s, pydantic classes,
                TypedDicts, OpenAI tool dicts).
            tool_choice: "auto"/None (the model may call a tool: best effort, parsed if the whole
                answer is a call), "none", "any"/"required"/True (some tool), a tool name or
                {"type": "function", "function": {"name": ...}} (that tool).
            strict: passed to `convert_to_openai_tool`; calls validate against the schema either way.
        """
        formatted = [convert_to_openai_tool(t, strict=strict) for t in tools]
        plan_tools(formatted, tool_choice)  # reject a bad choice now rather than at the first call
        return super().bind(tools=formatted, tool_choice=tool_choice, **kwargs)

    def with_structured_output(
        self,
        schema: dict | type | None = None,
        *,
        method: str = "json_schema",
        include_raw: bool = False,
        strict: bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, dict | Any]:
        """Return objects of `schema` (pydantic class, TypedDict or JSON schema dict).

        Args:
            method: "json_schema" (decode under the schema's grammar), "function_calling" (the schema
                as a forced tool) or "json_mode" (any JSON object, or the schema's when given).
            include_raw: return {"raw", "parsed", "parsing_error"} instead of raising on a bad parse.
            strict: accepted for compatibility; the grammar makes every method strict.
        """
        if kwargs:
            raise ValueError(f"Received unsupported arguments {kwargs}")
        return structured_runnable(self, schema, method, include_raw, strict)


def _json(args: dict[str, Any]) -> str:
    return json.dumps(args, ensure_ascii=False)
