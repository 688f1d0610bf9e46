"""The shared-cache path's own decode loop (`egtlm_core.generation.decode`) against `generate`.

Both start from the same prompt: `generate` prefills it itself; the loop gets the states of one
plain forward over it and that forward's last logits. Tokens must be identical, greedy and sampled
(same seed), with EOS, stop strings and logits processors (the JSON grammar included).
"""

from __future__ import annotations

import json

import pytest
import torch
from transformers import DynamicCache, LogitsProcessor, NoRepeatNGramLogitsProcessor

from egtlm_core import ChatResult, EgtLM
from egtlm_core.generation.chat import chat_input_ids, generation_config, stream_generate
from egtlm_core.generation.decode import decode_tokens, prepare_decoding
from egtlm_core.modeling.compat import cache_kwarg

LONG = [{"role": "user", "content": "Tell me about the fox"}]
SHORT = [{"role": "user", "content": "hello"}]
NEW = 40


@pytest.fixture(scope="module", params=["llama", "qwen2", "mistral"])
def m(request, tiny_model_dirs) -> EgtLM:
    return EgtLM(str(tiny_model_dirs[request.param]), torch_dtype="float32")


def prefilled(model, ids: list[int]) -> tuple[DynamicCache, torch.Tensor]:
    """The prompt's states and next-token logits from one plain forward."""
    cache = DynamicCache(config=model.config)
    input_ids = torch.tensor([ids])
    with torch.inference_mode():
        out = model(
            input_ids=input_ids,
            attention_mask=torch.ones_like(input_ids),
            use_cache=True,
            **{cache_kwarg(model.forward): cache},
        )
    return cache, out.logits[0, -1]


def hf_tokens(model, ids: list[int], config, processors=None) -> list[int]:
    input_ids = torch.tensor([ids])
    with torch.inference_mode():
        out = model.generate(
            input_ids=input_ids,
            attention_mask=torch.ones_like(input_ids),
            generation_config=config,
            logits_processor=processors,
        )
    return out[0, len(ids) :].tolist()


def loop_tokens(model, ids: list[int], config, processors=None) -> list[int]:
    cache, logits = prefilled(model, ids)
    merged, chain = prepare_decoding(model, config, processors, len(ids))
    return list(decode_tokens(model, ids, cache, logits, merged, chain))


def config_for(m: EgtLM, max_new_tokens: int = NEW, temperature: float = 0.0, top_p: float = 1.0):
    return generation_config(m.tokenizer, m.model, max_new_tokens, temperature, top_p)


@pytest.mark.parametrize("messages", [LONG, SHORT])
def test_greedy_tokens_equal_generate(m, messages):
    ids = chat_input_ids(m.tokenizer, messages)
    want = hf_tokens(m.model, ids, config_for(m))
    assert len(want) > 5
    assert loop_tokens(m.model, ids, config_for(m)) == want


def test_eos_ends_decoding_where_generate_ends(m):
    ids = chat_input_ids(m.tokenizer, LONG)
    free = hf_tokens(m.model, ids, config_for(m))
    config = config_for(m)
    config.eos_token_id = [free[6]]  # a token the answer reaches: both stop at its first occurrence
    want = hf_tokens(m.model, ids, config)
    assert len(want) < NEW and want[-1] == free[6]
    assert loop_tokens(m.model, ids, config) == want


def test_sampling_equals_generate_under_the_same_seed(m):
    ids = chat_input_ids(m.tokenizer, LONG)
    config = config_for(m, temperature=0.9, top_p=0.8)
    runs = []
    for seed in range(3):
        torch.manual_seed(seed)
        want = hf_tokens(m.model, ids, config)
        torch.manual_seed(seed)
        assert loop_tokens(m.model, ids, config) == want
        runs.append(want)
    assert len({tuple(r) for r in runs}) > 1  # the seeds matter: this is sampling


class NoMultiplesOf(LogitsProcessor):
    """Forbids every token id divisible by `n` (the same on any step, so easy to check)."""

    def __init__(self, n: int):
        self.n = n

    def __call__(self, input_ids, scores):
        banned = torch.arange(scores.shape[-1]) % self.n == 0
        return scores.masked_fill(banned, float("-inf"))


def test_logits_processors_apply_as_in_generate(m):
    ids = chat_input_ids(m.tokenizer, LONG)
    processors = [NoMultiplesOf(3), NoRepeatNGramLogitsProcessor(2)]
    want = hf_tokens(m.model, ids, config_for(m), processors)
    got = loop_tokens(m.model, ids, config_for(m), processors)
    assert got == want and all(t % 3 for t in got)
    assert got != hf_tokens(m.model, ids, config_for(m))  # the processors changed the answer


def test_json_grammar_decodes_as_in_generate(m):
    pytest.importorskip("xgrammar")
    from egtlm_core.generation.constrained import json_grammar

    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    grammar = json_grammar(m.tokenizer, schema, model=m.model)
    ids = chat_input_ids(m.tokenizer, LONG)
    budget = grammar.min_tokens + 24
    want = hf_tokens(m.model, ids, config_for(m, budget), [grammar.processor(max_new_tokens=budget)])
    got = loop_tokens(m.model, ids, config_for(m, budget), [grammar.processor(max_new_tokens=budget)])
    assert got == want
    assert "city" in json.loads(m.tokenizer.decode(got, skip_special_tokens=True))


def run(m: EgtLM, ids: list[int], stop=(), max_new_tokens: int = NEW, prefill: bool = False):
    """Pieces and result of `stream_generate`, by `generate` or from prefilled logits."""
    result = ChatResult("", 0, 0, "stop")
    extra = {}
    if prefill:
        states = prefilled(m.model, ids)
        extra = {"prefill": lambda: states}
    config = config_for(m, max_new_tokens)
    pieces = list(stream_generate(m.model, m.tokenizer, ids, config, stop=stop, result=result, **extra))
    return pieces, result


def test_prefilled_stream_gives_generates_text_counts_and_finish(m):
    ids = chat_input_ids(m.tokenizer, LONG)
    pieces, want = run(m, ids)
    got_pieces, got = run(m, ids, prefill=True)
    assert got.text == want.text and "".join(got_pieces) == got.text and got.text
    assert got_pieces == pieces  # cut into the same pieces as generate's streamer
    assert (got.completion_tokens, got.finish_reason, got.prompt_tokens) == (
        want.completion_tokens,
        want.finish_reason,
        want.prompt_tokens,
    )
    assert got.ttft_s is not None and got.ttft_s <= got.total_s


def test_prefilled_stream_stops_at_a_stop_string_like_generate(m):
    ids = chat_input_ids(m.tokenizer, LONG)
    _, free = run(m, ids)
    # three ASCII letters of the answer first seen after its start (generate's token-level stop check
    # misses stop strings inside the byte-level pieces a random model emits; the loop's does not)
    text = free.text
    at = next(
        i
        for i in range(2, len(text) - 3)
        if text[i : i + 3].isascii() and text[i : i + 3].isalpha() and text.find(text[i : i + 3]) == i
    )
    stop = text[at : at + 3]
    _, want = run(m, ids, stop=[stop])
    _, got = run(m, ids, stop=[stop], prefill=True)
    assert stop not in got.text and free.text.startswith(got.text)
    assert (got.text, got.completion_tokens, got.finish_reason) == (
        want.text,
        want.completion_tokens,
        "stop",
    )
    assert got.completion_tokens < free.completion_tokens


def test_decoding_stops_when_the_consumer_stops(m):
    ids = chat_input_ids(m.tokenizer, LONG)
    cache, logits = prefilled(m.model, ids)
    calls = []
    hook = m.model.register_forward_pre_hook(lambda module, args: calls.append(1))
    try:
        merged, chain = prepare_decoding(m.model, config_for(m), None, len(ids))
        tokens = decode_tokens(m.model, ids, cache, logits, merged, chain)
        first = [next(tokens) for _ in range(3)]
        tokens.close()
    finally:
        hook.remove()
    assert len(first) == 3 and len(calls) == 2  # the first token came from the prefill's logits
    assert cache.get_seq_length() == len(ids) + 2
