"""`EgtLMLLM`: a LlamaIndex LLM over `EgtLM.chat`, sharing weights and KV states with `EgtLMEmbedding`."""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

try:
    from llama_index.core.base.llms.types import (
        ChatMessage,
        ChatResponse,
        ChatResponseAsyncGen,
        ChatResponseGen,
        CompletionResponse,
        CompletionResponseAsyncGen,
        CompletionResponseGen,
        LLMMetadata,
        MessageRole,
    )
    from llama_index.core.bridge.pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator
    from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
    from llama_index.core.llms.function_calling import FunctionCallingLLM
    from llama_index.core.llms.llm import ToolSelection
    from llama_index.core.prompts import BasePromptTemplate
except ImportError as err:  # pragma: no cover - the extra is missing
    raise ImportError(
        "llama_index.llms.egtlm needs llama-index-core: pip install 'egtlm[llamaindex]'"
    ) from err

from egtlm_core import RECOMPUTE_TOKENS, EgtLM
from egtlm_core.adapter_kit import LazyLM, display_name

from ._messages import TOOL_CALLS, to_chat_messages, tool_specs
from ._report import current_collector, report

Model = TypeVar("Model", bound=BaseModel)
_CALL_OPTIONS = (
    "max_new_tokens",
    "max_tokens",
    "temperature",
    "top_p",
    "stop",
    "reuse_cache",
    "recompute_tokens",
)
_INTERNAL = ("tools", "tool_required", "schema")  # set by chat_with_tools / structured_predict


@dataclass
class _Call:
    """One generation, resolved: the model, the rendered messages and the options of `EgtLM.chat`
    (tools and response_format included: the core builds the grammar and parses the calls)."""

    lm: EgtLM
    messages: list[dict[str, str]]
    options: dict[str, Any]


class EgtLMLLM(FunctionCallingLLM):
    """Generate with the decoder model that also embeds, splicing retrieved documents' KV states.

    Construction is cheap; the weights load on first use through the registry `EgtLMEmbedding`
    uses, so both hold one copy. With `reuse_cache=True` documents handed out by the shared-cache
    synthesizer (`llama_index.response_synthesizers.egtlm`) are spliced where they appear in the
    prompt; `ChatResponse.additional_kwargs["egtlm"]` reports what was reused. Forced tool calls
    (`tool_required=True`) and `structured_predict` are grammar-constrained, so even the 135M default
    model returns calls and objects that validate.

    Example:
        >>> from llama_index.llms.egtlm import EgtLMLLM
        >>> llm = EgtLMLLM(max_new_tokens=32)
        >>> llm.complete("What is the capital of France?").text
    """

    model_config = ConfigDict(protected_namespaces=(), arbitrary_types_allowed=True)

    model: Any = Field(default=None, description="Path, hub id, EgtLM instance, or None (packaged default).")
    model_kwargs: dict[str, Any] = Field(default_factory=dict, description="EgtLM loading arguments.")
    max_new_tokens: int = Field(default=256, ge=1, description="Most tokens to generate (num_output).")
    temperature: float = Field(default=0.0, ge=0.0, description="0 decodes greedily.")
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    stop: list[str] | None = Field(default=None, description="Stop strings (not returned).")
    reuse_cache: bool = Field(default=True, description="Splice handed-out documents' stored states.")
    recompute_tokens: int = Field(
        default=RECOMPUTE_TOKENS, ge=0, description="Recompute each spliced document's first n tokens."
    )
    context_window: int | None = Field(default=None, ge=1, description="None: the model config's.")

    _lazy: LazyLM = PrivateAttr()

    @model_validator(mode="after")
    def _build_client(self) -> EgtLMLLM:
        self._lazy = LazyLM(self.model, mode="unified", model_kwargs=self.model_kwargs)
        return self

    @classmethod
    def class_name(cls) -> str:
        return "EgtLMLLM"

    @property
    def client(self) -> EgtLM:
        """The `EgtLM` doing the work (loaded on first access)."""
        return self._lazy.get()

    @property
    def metadata(self) -> LLMMetadata:
        window = self.context_window or int(self.client.model.config.max_position_embeddings)
        return LLMMetadata(
            context_window=window,
            num_output=self.max_new_tokens,
            is_chat_model=True,
            is_function_calling_model=True,  # forced calls are grammar-constrained
            model_name=display_name(self.model),
        )

    def prompt_text(self, messages: Sequence[ChatMessage]) -> str:
        """The text the model is given for `messages` (system prompt added, chat template applied)."""
        return self.client.document_cache.render_prompt(
            to_chat_messages(self._extend_messages(list(messages)))
        )

    # --- one call ---------------------------------------------------------------------------------
    def _prepare(self, messages: Sequence[ChatMessage], kwargs: dict[str, Any]) -> _Call:
        unknown = sorted(set(kwargs) - set(_CALL_OPTIONS) - set(_INTERNAL))
        if unknown:
            raise TypeError(f"EgtLMLLM got unknown call arguments {unknown}; it takes {list(_CALL_OPTIONS)}.")
        tools, schema = kwargs.get("tools"), kwargs.get("schema")
        options = {
            "max_new_tokens": kwargs.get("max_new_tokens", kwargs.get("max_tokens", self.max_new_tokens)),
            "temperature": kwargs.get("temperature", self.temperature),
            "top_p": kwargs.get("top_p", self.top_p),
            "stop": kwargs.get("stop", self.stop),
            "reuse_cache": kwargs.get("reuse_cache", self.reuse_cache),
            "recompute_tokens": kwargs.get("recompute_tokens", self.recompute_tokens),
            "tools": tools or None,
            "tool_choice": "required" if kwargs.get("tool_required") else "auto",
            "response_format": None if schema is None else {"type": "json_schema", "schema": schema},
        }
        return _Call(self.client, to_chat_messages(list(messages)), options)

    def _response(self, call: _Call, result: Any, delta: str | None, reports: list | None) -> ChatResponse:
        stats = report(result, call.options["reuse_cache"])
        if reports is not None:
            reports.append(stats)
        calls = [
            ToolSelection(tool_id=c.id, tool_name=c.name, tool_kwargs=c.arguments) for c in result.tool_calls
        ]
        message = ChatMessage(
            role=MessageRole.ASSISTANT,
            content="" if calls else result.text,
            additional_kwargs={TOOL_CALLS: calls} if calls else {},
        )
        usage = {"prompt_tokens": result.prompt_tokens, "completion_tokens": result.completion_tokens}
        usage["total_tokens"] = result.prompt_tokens + result.completion_tokens
        return ChatResponse(
            message=message, delta=delta, raw=result, additional_kwargs={"egtlm": stats, **usage}
        )

    def _chat(
        self, messages: Sequence[ChatMessage], kwargs: dict, cancel: threading.Event | None
    ) -> ChatResponse:
        call, reports = self._prepare(messages, kwargs), current_collector()
        result = call.lm.chat(call.messages, **call.options, cancel=cancel)
        return self._response(call, result, None, reports)

    def _stream(
        self, messages: Sequence[ChatMessage], kwargs: dict, cancel: threading.Event | None
    ) -> ChatResponseGen:
        call, reports = self._prepare(messages, kwargs), current_collector()
        stream = call.lm.stream_chat(call.messages, **call.options, cancel=cancel)  # checked here

        def pieces() -> ChatResponseGen:
            text = ""
            try:
                for piece in stream:  # the core holds back text that may be a tool call
                    text += piece
                    yield ChatResponse(
                        message=ChatMessage(role=MessageRole.ASSISTANT, content=text), delta=piece
                    )
                yield self._response(call, stream.result, "", reports)
            finally:
                stream.close()  # leaving early stops generate within one token

        return pieces()

    # --- BaseLLM ----------------------------------------------------------------------------------
    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        return self._chat(messages, kwargs, None)

    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        return self._stream(messages, kwargs, None)

    @llm_chat_callback()
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        """`chat` in a worker thread; cancelling the task stops the generation within one token."""
        return await _in_thread(lambda cancel: self._chat(messages, kwargs, cancel))

    @llm_chat_callback()
    async def astream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseAsyncGen:
        """`stream_chat` with every step in a worker thread, so the event loop never waits on the model."""
        cancel = threading.Event()
        sync = await asyncio.to_thread(self._stream, messages, kwargs, cancel)
        return _async_items(sync, cancel)

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        """The prompt as one user turn of the chat template (an instruct model's way of completing)."""
        return _completion(self._chat(_user(prompt), kwargs, None))

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        return (_completion(r) for r in self._stream(_user(prompt), kwargs, None))

    @llm_completion_callback()
    async def acomplete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return _completion(await _in_thread(lambda cancel: self._chat(_user(prompt), kwargs, cancel)))

    @llm_completion_callback()
    async def astream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseAsyncGen:
        cancel = threading.Event()
        sync = await asyncio.to_thread(self._stream, _user(prompt), kwargs, cancel)

        async def gen() -> CompletionResponseAsyncGen:
            async for item in _async_items(sync, cancel):
                yield _completion(item)

        return gen()

    # --- tools and structured output --------------------------------------------------------------
    def _prepare_chat_with_tools(
        self,
        tools: Sequence[Any],
        user_msg: str | ChatMessage | None = None,
        chat_history: list[ChatMessage] | None = None,
        verbose: bool = False,
        allow_parallel_tool_calls: bool = False,
        tool_required: bool = False,
        **kwargs: Any,
    ) -> dict[str, Any]:
        messages = list(chat_history or [])
        if user_msg is not None:
            messages.append(
                ChatMessage(role=MessageRole.USER, content=user_msg)
                if isinstance(user_msg, str)
                else user_msg
            )
        return {"messages": messages, "tools": tool_specs(tools), "tool_required": tool_required, **kwargs}

    def get_tool_calls_from_response(
        self, response: ChatResponse, error_on_no_tool_call: bool = True, **kwargs: Any
    ) -> list[ToolSelection]:
        calls = list(response.message.additional_kwargs.get(TOOL_CALLS) or [])
        if not calls and error_on_no_tool_call:
            raise ValueError(f"Expected a tool call in the response, got {response.message.content!r:.200}.")
        return calls

    def structured_predict(
        self,
        output_cls: type[Model],
        prompt: BasePromptTemplate,
        llm_kwargs: dict | None = None,
        **prompt_args: Any,
    ) -> Model:
        """An `output_cls` decoded under its JSON schema's grammar (always parses)."""
        kwargs = {**(llm_kwargs or {}), "schema": output_cls.model_json_schema()}
        response = self._chat(self._get_messages(prompt, **prompt_args), kwargs, None)
        return output_cls.model_validate_json(response.message.content or "")

    async def astructured_predict(
        self,
        output_cls: type[Model],
        prompt: BasePromptTemplate,
        llm_kwargs: dict | None = None,
        **prompt_args: Any,
    ) -> Model:
        predict = functools.partial(self.structured_predict, output_cls, prompt, llm_kwargs, **prompt_args)
        return await asyncio.to_thread(predict)


def _user(prompt: str) -> list[ChatMessage]:
    return [ChatMessage(role=MessageRole.USER, content=prompt)]


def _completion(response: ChatResponse) -> CompletionResponse:
    return CompletionResponse(
        text=response.message.content or "",
        delta=response.delta,
        raw=response.raw,
        additional_kwargs=response.additional_kwargs,
    )


async def _in_thread(work: Callable[[threading.Event], Any]) -> Any:
    """`work(cancel)` off the event loop; a cancelled task sets `cancel` (generation stops in a token)."""
    cancel = threading.Event()
    try:
        return await asyncio.to_thread(work, cancel)
    finally:
        cancel.set()


async def _async_items(items: Any, cancel: threading.Event) -> Any:
    """Items of a sync generator, each step in a worker thread; stopping early cancels the generation."""
    done = object()
    try:
        while (item := await asyncio.to_thread(next, items, done)) is not done:
            yield item
    finally:
        cancel.set()
        try:
            items.close()
        except ValueError:  # still running in its worker thread; `cancel` stops it there
            pass
