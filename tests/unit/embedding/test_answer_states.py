"""InBedder answer-state embeddings (`encode(method="answer")`): batch invariance, the states HF's
own `generate` reports, layers, pools, templates, bad options; one end-to-end case on the default model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from egtlm_core import EgtLM
from egtlm_core.embedding.answer_states import ANSWER_TEMPLATE, AnswerOptions, answer_prompts

TEXTS = [
    "The quick brown fox jumps over the lazy dog while a cat sat on the mat by the fire.",
    "fox",
    "Paris is the capital of France.",
    "Numbers like 12345 and words like don't.",
]
QUESTION = "What is the capital?"


@pytest.fixture(scope="module")
def lm(tiny_llama_dir) -> EgtLM:
    return EgtLM(str(tiny_llama_dir), torch_dtype="float32")


def reference(lm: EgtLM, text: str, layer: int, n: int) -> tuple[list[np.ndarray], list[int]]:
    """Answer states and tokens of one unpadded prompt from transformers' own greedy `generate`."""
    prompt = answer_prompts(lm.tokenizer, [text], AnswerOptions(QUESTION))[0]
    out = lm.model.generate(
        torch.tensor([prompt]),
        attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
        max_new_tokens=n,
        min_new_tokens=n,
        do_sample=False,
        output_hidden_states=True,
        return_dict_in_generate=True,
        pad_token_id=lm.tokenizer.pad_token_id,
    )
    # hidden_states[t][layer]: the forward that predicts generated token t; its last position does.
    states = [step[layer][0, -1].float().numpy() for step in out.hidden_states]
    return states, out.sequences[0, len(prompt) :].tolist()


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x)


@pytest.mark.parametrize("pool", ["first", "mean", "last"])
def test_batched_equals_one_by_one(lm, pool):
    batched, answers = lm.encode(
        TEXTS, instruction=QUESTION, method="answer", pool=pool, answer_tokens=4, return_answers=True
    )
    for i, text in enumerate(TEXTS):
        alone, answer = lm.encode(
            text, instruction=QUESTION, method="answer", pool=pool, answer_tokens=4, return_answers=True
        )
        np.testing.assert_allclose(batched[i], alone, atol=1e-5)
        assert answers[i] == answer
    small = lm.encode(TEXTS, instruction=QUESTION, method="answer", pool=pool, answer_tokens=4, batch_size=3)
    np.testing.assert_allclose(small, batched, atol=1e-5)


@pytest.mark.parametrize("layer", [-1, 1])
def test_states_are_the_ones_generate_reports(lm, layer):
    n = 3
    got, answers = lm.encode(
        TEXTS, instruction=QUESTION, method="answer", layer=layer, answer_tokens=n, return_answers=True
    )
    means = lm.encode(TEXTS, instruction=QUESTION, method="answer", layer=layer, answer_tokens=n, pool="mean")
    lasts = lm.encode(TEXTS, instruction=QUESTION, method="answer", layer=layer, answer_tokens=n, pool="last")
    special = set(lm.tokenizer.all_special_ids)
    for i, text in enumerate(TEXTS):
        states, tokens = reference(lm, text, layer, n)
        kept = []
        for state, token in zip(states, tokens, strict=True):
            if token in special:
                break
            kept.append(state)
        kept = kept or states[:1]
        np.testing.assert_allclose(got[i], unit(states[0]), atol=1e-5)
        np.testing.assert_allclose(means[i], unit(np.mean(kept, axis=0)), atol=1e-5)
        np.testing.assert_allclose(lasts[i], unit(kept[-1]), atol=1e-5)
        expected = [t for t in tokens if t not in special]
        assert answers[i] == lm.tokenizer.decode(expected, skip_special_tokens=True).strip()


def test_layer_zero_is_the_last_prompt_tokens_embedding(lm):
    vectors = lm.encode(TEXTS[:2], instruction=QUESTION, method="answer", layer=0)
    table = lm.model.get_input_embeddings().weight.detach().float().numpy()
    for vector, prompt in zip(
        vectors, answer_prompts(lm.tokenizer, TEXTS[:2], AnswerOptions(QUESTION)), strict=True
    ):
        np.testing.assert_allclose(vector, unit(table[prompt[-1]]), atol=1e-6)


def test_prompt_is_the_inbedder_template_and_configurable(lm):
    ids = answer_prompts(lm.tokenizer, ["fox"], AnswerOptions(QUESTION))[0]
    assert lm.tokenizer.decode(ids, skip_special_tokens=True) == ANSWER_TEMPLATE.format(
        input="fox", instruction=QUESTION
    )
    assert ANSWER_TEMPLATE == "### Input:\n{input}\n\n### Instruction:\n{instruction}\n\n### Response:"
    default = lm.encode(TEXTS, instruction=QUESTION, method="answer")
    custom = lm.encode(
        TEXTS, instruction=QUESTION, method="answer", answer_template="Q: {instruction}\n{input}\nA:"
    )
    assert np.abs(default - custom).max(axis=1).min() > 1e-3
    other = lm.encode(TEXTS, instruction="Which animal is it?", method="answer")
    assert np.abs(default - other).max(axis=1).min() > 1e-3  # the instruction changes every vector


def test_shapes_dim_tensor_and_normalisation(lm):
    one = lm.encode("fox", instruction=QUESTION, method="answer")
    assert one.shape == (64,) and one.dtype == np.float32 and abs(np.linalg.norm(one) - 1) < 1e-5
    short = lm.encode(TEXTS, instruction=QUESTION, method="answer", dim=16, convert_to_tensor=True)
    assert isinstance(short, torch.Tensor) and short.shape == (4, 16)
    torch.testing.assert_close(short.norm(dim=-1), torch.ones(4))


def test_get_cache_is_refused(lm):
    with pytest.raises(TypeError, match="get_cache"):
        lm.encode(TEXTS, instruction=QUESTION, method="answer", get_cache=True)


def test_long_inputs_are_truncated_with_a_warning(lm):
    with pytest.warns(UserWarning, match="truncated"):
        lm.encode(TEXTS[0], instruction=QUESTION, method="answer", max_length=4)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"instruction": None}, "needs an instruction"),
        ({"pool": "max"}, "Unknown answer pool"),
        ({"answer_tokens": 0}, "answer_tokens"),
        ({"answer_template": "{input} only"}, "needs {input} and {instruction}"),
        ({"method": "magic"}, "Unknown encode method"),
    ],
)
def test_bad_options_are_refused(lm, kwargs, match):
    call = {"instruction": QUESTION, "method": "answer", **kwargs}
    with pytest.raises(ValueError, match=match):
        lm.encode(TEXTS, **call)


@pytest.mark.slow
def test_default_model_answers_and_embeds():
    lm = EgtLM(torch_dtype="float32")
    questions = ["Who wrote the play Hamlet?", "In which year did the Second World War end?"]
    vectors, answers = lm.encode(
        questions,
        instruction="What kind of answer does this question expect?",
        method="answer",
        answer_tokens=3,
        return_answers=True,
    )
    assert vectors.shape == (2, lm.embedding_dim) and all(a.strip() for a in answers)
    alone = lm.encode(
        questions[1], instruction="What kind of answer does this question expect?", method="answer"
    )
    np.testing.assert_allclose(vectors[1], alone, atol=1e-4)
