"""Pooling against reference formulas computed here, independently of egtlm's mask and pooling code.

The reference runs every text on its own (no padding at all) through a private copy of the HF model
loaded from disk, bidirectional via the forward's own `is_causal=False`, then pools with the plain
formulas below. `EgtLM.encode` runs the same texts in a padded batch with its own 4D mask.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoModel

from egtlm_core import EgtLM
from egtlm_core.embedding.encoding import tokenize_for_embedding
from egtlm_core.embedding.pooling import pool

TEXTS = [
    "The quick brown fox jumps over the lazy dog by the fire.",
    "fox",
    "Paris is the capital of France.",
    "A cat sat on the mat.",
]
INSTRUCTION = "<|user|>\nRetrieve passages that answer the question\n<|embed|>\n"
POOLINGS = ["mean", "weightedmean", "last", "cls"]


# --- the reference ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ref_body(tiny_llama_dir):
    """A private copy of the bare transformer: nothing egtlm holds or changes."""
    return AutoModel.from_pretrained(str(tiny_llama_dir), dtype=torch.float32).eval()


def ref_pooled_span(tokenizer, instruction: str, text: str) -> tuple[list[int], list[int]]:
    """-> (token ids of instruction+text, indexes of the tokens that cover at least one text character)."""
    enc = tokenizer(instruction + text, return_offsets_mapping=True)
    lo, hi = len(instruction), len(instruction + text)
    covering = [i for i, (s, e) in enumerate(enc["offset_mapping"]) if max(s, lo) < min(e, hi)]
    return list(enc["input_ids"]), covering


def ref_hidden(body, ids: list[int], bidirectional: bool) -> torch.Tensor:
    with torch.no_grad():
        out = body(input_ids=torch.tensor([ids]), is_causal=not bidirectional)
    return out.last_hidden_state[0].float()


def ref_vector(hidden: torch.Tensor, pooled: list[int], method: str, normalize: bool = True) -> np.ndarray:
    h = hidden.double()
    if method == "mean":
        v = h[pooled].mean(dim=0)
    elif method == "weightedmean":  # GritLM: the i-th pooled token (1-based) weighs i
        w = torch.arange(1, len(pooled) + 1, dtype=torch.float64)
        v = (h[pooled] * w[:, None]).sum(dim=0) / w.sum()
    elif method == "last":
        v = h[-1]
    elif method == "cls":
        v = h[0]
    else:
        raise AssertionError(method)
    if normalize:
        v = v / v.norm()
    return v.numpy()


def reference(
    m: EgtLM, body, texts, instruction: str, method: str, bidirectional: bool, eos: bool
) -> np.ndarray:
    rows = []
    for t in texts:
        ids, pooled = ref_pooled_span(m.tokenizer, instruction, t)
        if eos:
            ids = ids + [m.tokenizer.eos_token_id]
        rows.append(ref_vector(ref_hidden(body, ids, bidirectional), pooled, method))
    return np.stack(rows)


# --- encode == reference ----------------------------------------------------------------------------
@pytest.mark.parametrize("padding_side", ["right", "left"])
@pytest.mark.parametrize("attention", ["bidirectional", "causal"])
@pytest.mark.parametrize("method", POOLINGS)
def test_encode_matches_reference(tiny_llama_dir, ref_body, method, attention, padding_side):
    m = EgtLM(
        str(tiny_llama_dir),
        torch_dtype="float32",
        pooling=method,
        attention=attention,
        padding_side=padding_side,
    )
    got = m.encode(TEXTS, instruction=INSTRUCTION, batch_size=3)
    want = reference(m, ref_body, TEXTS, INSTRUCTION, method, attention == "bidirectional", eos=False)
    assert got.dtype == np.float32 and got.shape == (len(TEXTS), 64)
    np.testing.assert_allclose(got, want, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_last_pooling_appends_eos_for_e5_prompts_only(tiny_llama_dir, ref_body, padding_side):
    with_eos = EgtLM(
        str(tiny_llama_dir),
        torch_dtype="float32",
        pooling="last",
        prompt_format="e5",  # e5-mistral pools the EOS state; other formats append nothing by default
        padding_side=padding_side,
        attention="bidirectional",
    )
    without = EgtLM(
        str(tiny_llama_dir),
        torch_dtype="float32",
        pooling="last",
        prompt_format="e5",
        embed_eos="",
        padding_side=padding_side,
        attention="bidirectional",
    )
    got_eos, got_plain = with_eos.encode(TEXTS), without.encode(TEXTS)
    np.testing.assert_allclose(
        got_eos, reference(with_eos, ref_body, TEXTS, "", "last", True, eos=True), atol=1e-5
    )
    np.testing.assert_allclose(
        got_plain, reference(without, ref_body, TEXTS, "", "last", True, eos=False), atol=1e-5
    )
    assert np.abs(got_eos - got_plain).max() > 1e-3


def test_mean_pooling_without_instruction_excludes_only_bos(tiny_llama_dir, ref_body):
    m = EgtLM(str(tiny_llama_dir), torch_dtype="float32", pooling="mean", attention="bidirectional")
    ids, pooled = ref_pooled_span(m.tokenizer, "", TEXTS[0])
    assert ids[0] == m.tokenizer.bos_token_id and pooled == list(range(1, len(ids)))
    np.testing.assert_allclose(
        m.encode(TEXTS[0], instruction=""),
        ref_vector(ref_hidden(ref_body, ids, True), pooled, "mean"),
        atol=1e-5,
    )


# --- instruction exclusion --------------------------------------------------------------------------
def test_instruction_is_not_pooled_but_is_attended(tiny_llama_dir, ref_body):
    m = EgtLM(str(tiny_llama_dir), torch_dtype="float32", pooling="mean", attention="bidirectional")
    text = "A cat sat on the mat."
    ids, pooled = ref_pooled_span(m.tokenizer, INSTRUCTION, text)
    hidden = ref_hidden(ref_body, ids, bidirectional=True)
    got = m.encode(text, instruction=INSTRUCTION)
    np.testing.assert_allclose(got, ref_vector(hidden, pooled, "mean"), atol=1e-5)
    # Pooling the instruction tokens as well would give a clearly different vector.
    assert np.abs(got - ref_vector(hidden, list(range(len(ids))), "mean")).max() > 1e-3
    # The instruction still shapes the text's states through attention.
    other = m.encode(text, instruction="<|user|>\nFind similar sentences\n<|embed|>\n")
    assert np.abs(got - other).max() > 1e-3
    # The same text tokens pooled with no instruction at all: different states, different vector.
    assert np.abs(got - m.encode(text)).max() > 1e-3


@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_instruction_boundary_from_full_text_offsets(tiny_llama_dir, ref_body, padding_side):
    """The instruction ends inside a word: "…a quest" + "ion about the fox" tokenizes with one token
    (" question") spanning the boundary. That token covers text characters and must be pooled;
    counting the instruction's tokens on their own would put the boundary in the wrong place."""
    tok_model = EgtLM(
        str(tiny_llama_dir),
        torch_dtype="float32",
        pooling="mean",
        padding_side=padding_side,
        attention="bidirectional",
    )
    tok = tok_model.tokenizer
    instruction, text = "Instruct: Given a quest", "ion about the fox"
    ids, pooled = ref_pooled_span(tok, instruction, text)
    enc = tok(instruction + text, return_offsets_mapping=True)
    first_start, first_end = enc["offset_mapping"][pooled[0]]
    assert first_start < len(instruction) < first_end, "the test needs a token merged across the boundary"
    assert tok.decode([ids[pooled[0]]]) == " question"
    assert pooled == list(range(pooled[0], len(ids)))
    naive_start = len(tok(instruction)["input_ids"])  # instruction tokenized alone
    assert naive_start != pooled[0]

    item = tokenize_for_embedding(tok, [text], instruction, max_length=512)[0]
    assert item.ids == ids and item.content_start == pooled[0]

    got = tok_model.encode(
        [text, "a much longer text about a cat and a dog by the fire"], instruction=instruction
    )[0]
    hidden = ref_hidden(ref_body, ids, bidirectional=True)
    np.testing.assert_allclose(got, ref_vector(hidden, pooled, "mean"), atol=1e-5)
    naive = list(range(naive_start, len(ids))) or [len(ids) - 1]
    assert np.abs(got - ref_vector(hidden, naive, "mean")).max() > 1e-3


def test_instruction_tokens_excluded_from_weightedmean_weights(tiny_llama_dir, ref_body):
    m = EgtLM(str(tiny_llama_dir), torch_dtype="float32", pooling="weightedmean", attention="bidirectional")
    text = "Paris is the capital of France."
    ids, pooled = ref_pooled_span(m.tokenizer, INSTRUCTION, text)
    hidden = ref_hidden(ref_body, ids, bidirectional=True)
    got = m.encode(text, instruction=INSTRUCTION)
    np.testing.assert_allclose(got, ref_vector(hidden, pooled, "weightedmean"), atol=1e-5)
    # Weights that keep counting from the start of the sequence (instruction included) differ.
    w = torch.arange(1, len(ids) + 1, dtype=torch.float64)[pooled]
    v = (hidden.double()[pooled] * w[:, None]).sum(0) / w.sum()
    assert np.abs(got - (v / v.norm()).numpy()).max() > 1e-4


# --- pool() on hand-made tensors --------------------------------------------------------------------
def _padded(rows: list[torch.Tensor], starts: list[int], side: str):
    longest = max(len(r) for r in rows)
    dim = rows[0].shape[1]
    hidden = torch.full((len(rows), longest, dim), 1e6)  # padding states are huge: any leak shows
    attention = torch.zeros(len(rows), longest, dtype=torch.long)
    content = torch.zeros(len(rows), longest, dtype=torch.long)
    for i, (r, s) in enumerate(zip(rows, starts, strict=True)):
        lo = longest - len(r) if side == "left" else 0
        hidden[i, lo : lo + len(r)] = r
        attention[i, lo : lo + len(r)] = 1
        content[i, lo + s : lo + len(r)] = 1
    return hidden, attention, content


@pytest.mark.parametrize("side", ["right", "left"])
def test_pool_formulas_on_synthetic_states(side):
    g = torch.Generator().manual_seed(0)
    rows = [torch.randn(n, 3, generator=g) for n in (5, 2, 7)]
    starts = [2, 1, 3]
    hidden, attention, content = _padded(rows, starts, side)
    for method in POOLINGS:
        got = pool(hidden, attention, content, method)
        for i, (r, s) in enumerate(zip(rows, starts, strict=True)):
            want = ref_vector(r, list(range(s, len(r))), method, normalize=False)
            np.testing.assert_allclose(got[i].numpy(), want, atol=1e-5, err_msg=f"{method} row {i} {side}")


def test_pool_weightedmean_weights_by_hand():
    hidden = torch.tensor([[[100.0], [1.0], [2.0], [4.0], [9.0]]])
    attention = torch.tensor([[1, 1, 1, 1, 0]])
    content = torch.tensor([[0, 1, 1, 1, 0]])  # token 0 is the instruction, token 4 padding
    got = pool(hidden, attention, content, "weightedmean")
    assert got.item() == pytest.approx((1 * 1.0 + 2 * 2.0 + 3 * 4.0) / 6)
    assert pool(hidden, attention, content, "mean").item() == pytest.approx(7.0 / 3)
    assert pool(hidden, attention, content, "last").item() == 4.0
    assert pool(hidden, attention, content, "cls").item() == 100.0


def test_pool_unknown_method():
    x = torch.zeros(1, 2, 3)
    m = torch.ones(1, 2, dtype=torch.long)
    with pytest.raises(ValueError, match="mean"):
        pool(x, m, m, "max")
