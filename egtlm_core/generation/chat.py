"""Chat generation on top of `transformers.generate`: messages in, text (or text pieces) out.

`generate` does the decoding; this module adds what a chat API needs around it: message checks,
stop strings that end generation and are cut from the text (also while streaming), token counts and
time to first token. A `prefix_cache` lets the shared-cache RAG path hand in precomputed KV states;
it is copied first because `generate` mutates the cache it is given.
"""

from __future__ import annotations

import copy
import threading
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import DynamicCache, GenerationConfig, TextIteratorStreamer

from ..modeling.compat import cache_kwarg

ROLES = ("system", "user", "assistant", "tool")


@dataclass
class ChatResult:
    """A finished generation. `ttft_s` is the time until the first generated token was ready."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" (EOS or a stop string) or "length"
    ttft_s: float | None = None
    total_s: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)

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


def chat_input_ids(tokenizer: Any, messages: list[dict[str, Any]], **template_kwargs: Any) -> list[int]:
    """Token ids of the chat prompt, ending with the assistant header."""
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(
            "This tokenizer has no chat template, so messages cannot be formatted; set "
            "tokenizer.chat_template or use a chat/instruct model."
        )
    encoded = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=True, return_dict=True, **template_kwargs
    )
    return list(encoded["input_ids"])


def generation_config(
    tokenizer: Any, model: Any, max_new_tokens: int, temperature: float, top_p: float
) -> GenerationConfig:
    """A fresh config per call: greedy at temperature 0, EOS from both tokenizer and model."""
    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be a positive integer, got {max_new_tokens!r}.")
    if temperature < 0 or not 0 < top_p <= 1:
        raise ValueError(f"Need temperature ≥ 0 and 0 < top_p ≤ 1, got {temperature!r} and {top_p!r}.")
    eos = {tokenizer.eos_token_id, *(_as_list(model.generation_config.eos_token_id))} - {None}
    sample = temperature > 0
    return GenerationConfig(
        max_new_tokens=max_new_tokens,
        do_sample=sample,
        temperature=temperature if sample else None,
        top_p=top_p if sample else None,
        top_k=None,
        eos_token_id=sorted(eos),
        pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(eos),
    )


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


class ChatStream(Iterator[str]):
    """Text pieces of a streamed chat; `result` (token counts, finish reason, timings) is filled once
    the pieces are exhausted."""

    def __init__(self, pieces: Iterator[str], result: ChatResult):
        self._pieces = pieces
        self.result = result

    def __iter__(self) -> ChatStream:
        return self

    def __next__(self) -> str:
        return next(self._pieces)


class _TimedStreamer(TextIteratorStreamer):
    """Notes when the first generated token arrives (the text queue lags it by whole words)."""

    first_token_at: float | None = None

    def put(self, value: torch.Tensor) -> None:
        if self.first_token_at is None and not (self.skip_prompt and self.next_tokens_are_prompt):
            self.first_token_at = time.perf_counter()
        super().put(value)


class StopFilter:
    """Holds back streamed text that could still become a stop string; cuts at the first stop."""

    def __init__(self, stop: Sequence[str]):
        self.stop = [s for s in stop if s]
        self.pending = ""
        self.stopped = False

    def feed(self, piece: str) -> str:
        if self.stopped:
            return ""
        self.pending += piece
        hits = [self.pending.find(s) for s in self.stop if s in self.pending]
        if hits:
            self.stopped = True
            out, self.pending = self.pending[: min(hits)], ""
            return out
        hold = max(
            (k for s in self.stop for k in range(1, len(s)) if self.pending.endswith(s[:k])), default=0
        )
        out = self.pending[: len(self.pending) - hold]
        self.pending = self.pending[len(out) :]
        return out

    def flush(self) -> str:
        out, self.pending = ("" if self.stopped else self.pending), ""
        return out


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
    stop: Sequence[str] = (),
    prefix_cache: DynamicCache | None = None,
    copy_cache: bool = True,
    logits_processor: Any = None,
    result: ChatResult | None = None,
) -> Iterator[str]:
    """Text pieces as they are generated; `result` (if given) is filled when they are exhausted.

    The prompt is checked against the model's context here, at the call, not at the first piece.
    """
    config = fit_to_context(model, len(prompt_ids), config)
    for processor in logits_processor or ():
        if hasattr(processor, "limit_budget"):  # processors that plan around the budget (JSON grammar)
            processor.limit_budget(config.max_new_tokens)
    return _stream(
        model, tokenizer, prompt_ids, config, stop, prefix_cache, copy_cache, logits_processor, result
    )


def _stream(
    model: Any,
    tokenizer: Any,
    prompt_ids: Sequence[int],
    config: GenerationConfig,
    stop: Sequence[str],
    prefix_cache: DynamicCache | None,
    copy_cache: bool,
    logits_processor: Any,
    result: ChatResult | None,
) -> Iterator[str]:
    stop = list(stop or ())
    streamer = _TimedStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    ids = torch.tensor([list(prompt_ids)], device=model.device)
    kwargs: dict[str, Any] = {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "generation_config": config,
        "streamer": streamer,
    }
    if stop:  # in the config, not as a generate kwarg (deprecated beside a generation_config)
        kwargs["generation_config"] = copy.copy(config)
        kwargs["generation_config"].stop_strings = stop
        kwargs["tokenizer"] = tokenizer
    if prefix_cache is not None:
        # generate mutates the cache it is given: hand it a copy unless the caller built it for this call.
        kwargs[cache_kwarg(model.forward)] = copy.deepcopy(prefix_cache) if copy_cache else prefix_cache
    if logits_processor is not None:
        kwargs["logits_processor"] = logits_processor
    outcome: dict[str, Any] = {}

    def work() -> None:
        try:
            with torch.inference_mode():
                outcome["sequences"] = model.generate(**kwargs)
        except BaseException as err:  # surfaced in the caller's thread below
            outcome["error"] = err
            streamer.end()

    start = time.perf_counter()
    thread = threading.Thread(target=work, name="egtlm-generate", daemon=True)
    thread.start()
    stop_filter, pieces = StopFilter(stop), []
    for piece in streamer:
        text = stop_filter.feed(piece)
        if text:
            pieces.append(text)
            yield text
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    tail = stop_filter.flush()
    if tail:
        pieces.append(tail)
        yield tail
    if result is not None:
        new = outcome["sequences"][0, ids.shape[1] :]
        ended_by_eos = len(new) > 0 and int(new[-1]) in _as_list(config.eos_token_id)
        result.text = "".join(pieces)
        result.prompt_tokens = ids.shape[1]
        result.completion_tokens = len(new)
        at_limit = len(new) >= config.max_new_tokens and not (ended_by_eos or stop_filter.stopped)
        result.finish_reason = "length" if at_limit else "stop"
        result.ttft_s = None if streamer.first_token_at is None else streamer.first_token_at - start
        result.total_s = time.perf_counter() - start


def generate_text(
    model: Any, tokenizer: Any, prompt_ids: Sequence[int], config: GenerationConfig, **kwargs: Any
) -> ChatResult:
    """Run `stream_generate` to the end and return the whole `ChatResult`."""
    result = ChatResult("", 0, 0, "stop")
    for _ in stream_generate(model, tokenizer, prompt_ids, config, result=result, **kwargs):
        pass
    return result
