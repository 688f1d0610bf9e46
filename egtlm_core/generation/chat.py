"""Chat generation on top of `transformers.generate`: messages in, text (or text pieces) out.

`generate` does the decoding; this module adds what a chat API needs around it: message checks,
stop strings that end generation and are cut from the text (also while streaming), token counts and
time to first token. The shared-cache RAG path hands in a `prefill` that returns the prompt's
states and next-token logits; decoding then goes on without `generate` (`decode.py`).

Every generation queues for the process-wide slot (`limit.py`, one at a time on CPU by default) and
can be stopped within one token: by setting its `cancel` event from any thread, or by closing its
stream (breaking out of it, `ChatStream.close()`, or dropping it), which a stopping criterion in the
`generate` thread checks before every token. Streams are pulled: a held stream that is not read
pauses after a few pieces (`streaming.STREAM_BUFFER`) and goes on when read.
"""

from __future__ import annotations

import copy
import threading
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import DynamicCache, GenerationConfig

from .decode import decode_stream
from .streaming import as_list, generate_stream, in_slot
from .tools import ToolCall

__all__ = ["ChatResult", "ChatStream", "generate_text", "stream_generate"]

ROLES = ("system", "user", "assistant", "tool")
MIN_SAMPLING_TEMPERATURE = 1e-4  # below it, decoding is greedy (the limit of sampling as T -> 0)


@dataclass
class ChatResult:
    """A finished generation. `ttft_s` is the time until the first generated token was ready, counted
    from when the generation got its slot; `queue_s` is how long it waited for that slot first."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" (EOS or a stop string), "length", or "cancelled"
    ttft_s: float | None = None
    total_s: float = 0.0
    queue_s: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)
    # With tools bound: the calls the answer made (its `text` is then the call's JSON), and why a
    # forced call is missing (cut short by max_new_tokens or a cancel). With a JSON response_format:
    # the parsed answer (None if it did not parse).
    tool_calls: list[ToolCall] = field(default_factory=list)
    tool_call_error: str | None = None
    parsed: Any = None

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


def check_messages(messages: Any) -> list[dict[str, Any]]:
    """Validate chat messages where they enter, with errors that say what a message must look like."""
    if isinstance(messages, str):
        return [{"role": "user", "content": messages}]
    if not isinstance(messages, Sequence) or not messages:
        raise ValueError("messages must be a non-empty list of {'role': ..., 'content': ...} dicts.")
    checked = []
    for i, msg in enumerate(messages):
        if not isinstance(msg, Mapping) or "role" not in msg or "content" not in msg:
            raise ValueError(f"messages[{i}] must be a dict with 'role' and 'content', got {msg!r}.")
        if msg["role"] not in ROLES:
            raise ValueError(f"messages[{i}] has unknown role {msg['role']!r}; expected one of {ROLES}.")
        if not isinstance(msg["content"], str):
            raise TypeError(
                f"messages[{i}]['content'] must be a string, got {type(msg['content']).__name__}."
            )
        checked.append(dict(msg))
    return checked


# Arguments egtlm itself gives `apply_chat_template`; `chat_template_kwargs` may not override them.
_TEMPLATE_RESERVED = ("conversation", "messages", "add_generation_prompt", "tokenize", "return_dict")


def check_template_kwargs(template_kwargs: Any) -> dict[str, Any]:
    """The chat-template arguments as a dict (e.g. {"tools": [...]}), refused where egtlm sets them."""
    if template_kwargs is None:
        return {}
    if not isinstance(template_kwargs, Mapping):
        raise TypeError(
            "chat_template_kwargs must be a dict of chat-template arguments, got "
            f"{type(template_kwargs).__name__}."
        )
    reserved = sorted(set(template_kwargs) & set(_TEMPLATE_RESERVED))
    if reserved:
        raise ValueError(
            f"chat_template_kwargs may not set {reserved}; egtlm sets {list(_TEMPLATE_RESERVED)}."
        )
    return dict(template_kwargs)


def chat_input_ids(
    tokenizer: Any, messages: list[dict[str, Any]], template_kwargs: Mapping[str, Any] | None = None
) -> list[int]:
    """Token ids of the chat prompt, ending with the assistant header."""
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(
            "This tokenizer has no chat template, so messages cannot be formatted; set "
            "tokenizer.chat_template or use a chat/instruct model."
        )
    encoded = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=True, return_dict=True, **(template_kwargs or {})
    )
    return list(encoded["input_ids"])


def check_sampling(max_new_tokens: Any, temperature: Any, top_p: Any) -> None:
    """The decoding budget and sampling settings, checked where they enter (`GenerationOptions`, the
    RAG path) with the same messages."""
    n = max_new_tokens
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"max_new_tokens must be a positive integer, got {n!r}.")
    numbers = (temperature, top_p)
    if any(not isinstance(x, (int, float)) or isinstance(x, bool) for x in numbers) or not (
        temperature >= 0 and 0 < top_p <= 1
    ):
        raise ValueError(f"Need temperature ≥ 0 and 0 < top_p ≤ 1, got {temperature!r} and {top_p!r}.")


def generation_config(
    tokenizer: Any, model: Any, max_new_tokens: int, temperature: float, top_p: float
) -> GenerationConfig:
    """A fresh config per call: greedy at temperature 0, EOS from both tokenizer and model."""
    check_sampling(max_new_tokens, temperature, top_p)
    eos = {tokenizer.eos_token_id, *(as_list(model.generation_config.eos_token_id))} - {None}
    # Sampling at a temperature this close to 0 is greedy decoding, and scores / 1e-300 overflow to
    # inf, which makes the sampler fail on NaN probabilities (the server's schema fuzz found it).
    sample = temperature >= MIN_SAMPLING_TEMPERATURE
    return GenerationConfig(
        max_new_tokens=max_new_tokens,
        do_sample=sample,
        temperature=temperature if sample else None,
        top_p=top_p if sample else None,
        top_k=None,
        eos_token_id=sorted(eos),
        pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(eos),
    )


class ChatStream(Iterator[str]):
    """Text pieces of a streamed chat; `result` (token counts, finish reason, timings) is filled once
    the pieces are exhausted, or when the stream is closed early.

    Stopping early stops the generation within one token: break out of a `for` loop over the stream
    (the dropped stream closes itself), call `close()`, use it as a context manager, or `cancel()` it
    from another thread (the consumer then gets the pieces so far and the end). A stream that is held
    but not read generates only a few pieces ahead of its reader (`streaming.STREAM_BUFFER`), then
    pauses until it is read, closed or dropped; while another generation waits for its slot it runs
    to its end instead, so that a forgotten stream never blocks the others.
    """

    def __init__(self, pieces: Iterator[str], result: ChatResult, cancel: threading.Event | None = None):
        self._pieces = pieces
        self.result = result
        self._cancel = cancel

    def __iter__(self) -> ChatStream:
        return self

    def __next__(self) -> str:
        return next(self._pieces)

    def cancel(self) -> None:
        """Ask the generation to stop before its next token (safe from any thread)."""
        if self._cancel is None:
            raise RuntimeError("This stream was made without a cancel event; close() it instead.")
        self._cancel.set()

    def close(self) -> None:
        """Stop the generation (within one token) and wait for it to end; the pieces end here."""
        close = getattr(self._pieces, "close", None)
        if close is not None:
            close()

    def __enter__(self) -> ChatStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def fit_to_context(model: Any, prompt_tokens: int, config: GenerationConfig) -> GenerationConfig:
    """Refuse a prompt longer than the model's context; cap max_new_tokens to the room left (warning).

    Past `max_position_embeddings` a RoPE model's output silently degrades, so an over-long prompt is
    an error that says what to shorten rather than a quietly worse answer.
    """
    limit = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    if not isinstance(limit, int) or limit <= 0:
        return config
    if prompt_tokens >= limit:
        raise ValueError(
            f"The prompt has {prompt_tokens} tokens but the model's context holds {limit} "
            "(max_position_embeddings); shorten the messages, pass fewer or shorter documents, or "
            "use a model with a longer context."
        )
    room = limit - prompt_tokens
    if config.max_new_tokens is not None and config.max_new_tokens > room:
        warnings.warn(
            f"max_new_tokens={config.max_new_tokens} does not fit after a {prompt_tokens}-token prompt "
            f"in the model's {limit}-token context; generating at most {room} tokens.",
            UserWarning,
            stacklevel=3,
        )
        config = copy.copy(config)
        config.max_new_tokens = room
    return config


def stream_generate(
    model: Any,
    tokenizer: Any,
    prompt_ids: Sequence[int],
    config: GenerationConfig,
    *,
    stop: Sequence[str] = (),
    logits_processor: Any = None,
    result: ChatResult | None = None,
    cancel: threading.Event | None = None,
    prefill: Callable[[], tuple[DynamicCache, torch.Tensor]] | None = None,
) -> Iterator[str]:
    """Text pieces as they are generated; `result` (if given) is filled when they are exhausted.

    The prompt is checked against the model's context here, at the call, not at the first piece.
    By default `generate` prefills the prompt and decodes (`streaming.py`). With `prefill` (the
    shared-cache path) that function, called inside the generation slot, returns the cache holding
    the whole prompt and the next-token logits, and decoding goes on from them in
    `decode.decode_stream`, with no `generate` call. Setting `cancel` (any thread) ends the
    generation before its next token; so does closing the returned iterator. Either way the
    generation's slot (`limit.py`) is given back.
    """
    config = fit_to_context(model, len(prompt_ids), config)
    result = result if result is not None else ChatResult("", 0, 0, "stop")
    for processor in logits_processor or ():
        if hasattr(processor, "limit_budget"):  # processors that plan around the budget (JSON grammar)
            processor.limit_budget(config.max_new_tokens)
    if prefill is None:
        return generate_stream(model, tokenizer, prompt_ids, config, stop, logits_processor, result, cancel)

    pieces = decode_stream(
        model, tokenizer, prompt_ids, prefill, config, stop, logits_processor, result, cancel
    )
    return in_slot(pieces, model.device.type, cancel, result)


def generate_text(
    model: Any, tokenizer: Any, prompt_ids: Sequence[int], config: GenerationConfig, **kwargs: Any
) -> ChatResult:
    """Run `stream_generate` to the end and return the whole `ChatResult`."""
    result = ChatResult("", 0, 0, "stop")
    for _ in stream_generate(model, tokenizer, prompt_ids, config, result=result, **kwargs):
        pass
    return result
