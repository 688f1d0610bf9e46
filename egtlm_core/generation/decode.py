"""Decoding from a prompt that is already in the cache: the shared-cache path's own loop.

The reuse path prefills every live token of a prompt (separators, recomputed document heads, the
question) in one forward over the spliced states and has the first token's logits in hand. Handing
that to `generate` would cost a second forward and `generate`'s per-call set-up (config merging,
validation, stop-string tables: ~200 ms for one stop string on SmolLM2's vocabulary on the 2-core
CPU machine). This loop starts from the logits instead and makes the same choices `generate` makes:
the same logits processors (built by the model's own `_get_logits_processor` from the same merged
config, user processors such as the JSON grammar included), float32 scores, `argmax` for greedy and
`multinomial` over the softmax for sampling, the same one-token forwards (2D all-ones mask, position
= cache length). Tests hold its tokens to `generate`'s. It runs in the caller's thread, so a
consumer that stops iterating stops decoding at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, cast

import torch
from transformers import DynamicCache, GenerationConfig, LogitsProcessorList, TextIteratorStreamer

from ..modeling.compat import cache_kwarg
from .streaming import StopFilter, as_list


def prepare_decoding(
    model: Any, config: GenerationConfig, logits_processor: Any, prompt_tokens: int
) -> tuple[GenerationConfig, LogitsProcessorList]:
    """The merged config and the logits processors `generate` would use for this call.

    `generate` fills a config's unset fields from the model's generation config and transformers'
    defaults (e.g. top_k=50 when sampling) and then builds its processor list from the result; the
    same two model methods are called here so that both paths sample from the same distribution.
    """
    merged, _ = model._prepare_generation_config(config)
    processors = model._get_logits_processor(
        generation_config=merged,
        input_ids_seq_length=prompt_tokens,
        logits_processor=LogitsProcessorList(logits_processor or []),
        device=model.device,
    )
    return merged, processors


def _next_token(scores: torch.Tensor, sample: bool) -> int:
    if sample:
        return int(torch.multinomial(torch.softmax(scores, dim=-1), num_samples=1)[0, 0])
    return int(torch.argmax(scores, dim=-1)[0])


def _step(model: Any, token: int, cache: DynamicCache) -> torch.Tensor:
    """One token at position len(cache) -> its next-token logits [1, vocab], as `generate` runs it."""
    length = cache.get_seq_length()
    with torch.inference_mode():
        out = model(
            input_ids=torch.tensor([[token]], device=model.device),
            attention_mask=torch.ones(1, length + 1, dtype=torch.long, device=model.device),
            position_ids=torch.tensor([[length]], device=model.device),
            use_cache=True,
            logits_to_keep=1,
            **{cache_kwarg(model.forward): cache},
        )
    return out.logits[:, -1]


class _Text:
    """The streamed text of the generated tokens, cut into pieces as `generate`'s streamer cuts them."""

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer
        self.streamer = TextIteratorStreamer(tokenizer, skip_prompt=False, skip_special_tokens=True)

    def _drain(self) -> list[str]:
        pieces = []
        while not self.streamer.text_queue.empty():
            piece = self.streamer.text_queue.get_nowait()
            if piece is not None and piece != self.streamer.stop_signal:
                pieces.append(piece)
        return [p for p in pieces if p]

    def put(self, token: int) -> list[str]:
        self.streamer.put(torch.tensor([token]))
        return self._drain()

    def end(self) -> list[str]:
        self.streamer.end()
        return self._drain()


def decode_tokens(
    model: Any,
    prompt_ids: Sequence[int],
    cache: DynamicCache,
    logits: torch.Tensor,
    config: GenerationConfig,
    processors: LogitsProcessorList,
) -> Iterator[int]:
    """Token ids chosen after a prompt whose states are all in `cache` (`config` and `processors`
    from `prepare_decoding`), up to `max_new_tokens` or an EOS (yielded). The next forward runs
    only when the next token is asked for, so a consumer that stops early computes nothing more."""
    eos = set(as_list(config.eos_token_id))
    sequence = torch.tensor([list(prompt_ids)], dtype=torch.long, device=model.device)
    scores = logits.reshape(1, -1).to(dtype=torch.float32, copy=True)
    for step in range(int(config.max_new_tokens)):
        if step:
            scores = _step(model, int(sequence[0, -1]), cache).to(dtype=torch.float32, copy=True)
        token = _next_token(processors(cast(torch.LongTensor, sequence), scores), bool(config.do_sample))
        sequence = torch.cat((sequence, sequence.new_tensor([[token]])), dim=1)
        yield token
        if token in eos:
            return


def decode_stream(
    model: Any,
    tokenizer: Any,
    prompt_ids: Sequence[int],
    prefill: Callable[[], tuple[DynamicCache, torch.Tensor]],
    config: GenerationConfig,
    stop: Sequence[str] = (),
    logits_processor: Any = None,
    result: Any = None,
    cancel: Any = None,
) -> Iterator[str]:
    """Text pieces of the answer to a prompt; `prefill()`, called at the first piece, gives the
    cache holding all of the prompt's states (decoding grows it) and the next-token logits after it
    ([vocab] or [1, vocab]). Stop strings end
    decoding at the token that completes one and are cut from the text. `result` (a `ChatResult`),
    if given, is filled when the pieces are exhausted; its `ttft_s` counts from the call to
    `prefill`. A set `cancel` event (any thread) ends decoding before the next token's forward.
    """
    started = time.perf_counter()
    cache, logits = prefill()
    merged, processors = prepare_decoding(model, config, logits_processor, len(prompt_ids))
    eos = set(as_list(merged.eos_token_id))
    text, stop_filter, stops = _Text(tokenizer), StopFilter(stop), [s for s in stop if s]
    generated: list[int] = []
    pieces: list[str] = []
    first_at: float | None = None
    for token in decode_tokens(model, prompt_ids, cache, logits, merged, processors):
        first_at = first_at or time.perf_counter()
        generated.append(token)
        for piece in text.put(token):
            if out := stop_filter.feed(piece):
                pieces.append(out)
                yield out
        if stops and _holds_stop(tokenizer, generated, stops):
            break
        if cancel is not None and cancel.is_set():
            break
    for last in [*(stop_filter.feed(piece) for piece in text.end()), stop_filter.flush()]:
        if last:
            pieces.append(last)
            yield last
    if result is not None:
        ended = bool(generated) and (generated[-1] in eos or stop_filter.stopped)
        result.text = "".join(pieces)
        result.prompt_tokens = len(prompt_ids)
        result.completion_tokens = len(generated)
        result.finish_reason = "stop" if ended or len(generated) < merged.max_new_tokens else "length"
        if not ended and cancel is not None and cancel.is_set():
            result.finish_reason = "cancelled"
        result.ttft_s = None if first_at is None else first_at - started
        result.total_s = time.perf_counter() - started


def _holds_stop(tokenizer: Any, generated: list[int], stops: list[str]) -> bool:
    """Whether the generated text now holds a stop string (generation ends at the token completing it)."""
    decoded = tokenizer.decode(generated, skip_special_tokens=True)
    return any(s in decoded for s in stops)
