"""`EgtLM.encode`: attention modes, batch invariance, Matryoshka dims, KV caches, bad inputs, threads."""

from __future__ import annotations

import copy
import threading
import warnings

import numpy as np
import pytest
import torch
from tiny_models import build_tiny_model
from transformers import AutoModel, DynamicCache

from egtlm_core import EgtLM

TEXTS = [
    "The quick brown fox jumps over the lazy dog while a cat sat on the mat by the fire.",
    "fox",
    "Paris is the capital of France.",
    "Numbers like 12345 and words like don't.",
    "A cat sat on the mat.",
]
INSTRUCTION = "<|user|>\nRetrieve passages that answer the question\n<|embed|>\n"
POOLINGS = ["mean", "weightedmean", "last", "cls"]


def load(directory, **kwargs) -> EgtLM:
    # These tests were written for GritLM's settings; attention="bidirectional" keeps cls pooling meaningful.
    if "attn" not in kwargs:
        kwargs.setdefault("attention", "bidirectional")
    kwargs.setdefault("pooling", "mean")
    return EgtLM(str(directory), torch_dtype="float32", **kwargs)


@pytest.fixture(scope="module")
def llama(tiny_llama_dir) -> EgtLM:
    return load(tiny_llama_dir)


def normalize(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


# --- attention --------------------------------------------------------------------------------------
def test_bidirectional_differs_from_causal(tiny_llama_dir):
    bi = load(tiny_llama_dir, attention="bidirectional").encode(TEXTS, instruction=INSTRUCTION)
    ca = load(tiny_llama_dir, attention="causal").encode(TEXTS, instruction=INSTRUCTION)
    assert np.abs(bi - ca).max(axis=1).min() > 1e-3  # every row differs
    np.testing.assert_array_equal(
        load(tiny_llama_dir, attn="bbcc").encode(TEXTS, instruction=INSTRUCTION), bi
    )
    np.testing.assert_array_equal(
        load(tiny_llama_dir, attn="cccc").encode(TEXTS, instruction=INSTRUCTION), ca
    )


@pytest.mark.parametrize("pooling", POOLINGS)
def test_causal_embedding_equals_hf_default_forward(tiny_llama_dir, pooling):
    """The HF model's own causal forward on a right-padded batch with a 2D mask, pooled by hand."""
    m = load(tiny_llama_dir, attention="causal", pooling=pooling)
    tok = m.tokenizer
    rows = []
    for t in TEXTS:
        enc = tok(INSTRUCTION + t, return_offsets_mapping=True)
        start = next(i for i, (_, e) in enumerate(enc["offset_mapping"]) if e > len(INSTRUCTION))
        ids = list(enc["input_ids"])  # no EOS: only e5 prompts append one by default
        rows.append((ids, start))
    longest = max(len(ids) for ids, _ in rows)
    input_ids = torch.tensor([ids + [tok.pad_token_id] * (longest - len(ids)) for ids, _ in rows])
    mask = torch.tensor([[1] * len(ids) + [0] * (longest - len(ids)) for ids, _ in rows])
    with torch.no_grad():
        hidden = m.model.model(input_ids=input_ids, attention_mask=mask).last_hidden_state.double()
    want = []
    for r, (ids, start) in enumerate(rows):
        h = hidden[r, : len(ids)]
        if pooling == "mean":
            v = h[start:].mean(0)
        elif pooling == "weightedmean":
            w = torch.arange(1, len(ids) - start + 1, dtype=torch.float64)[:, None]
            v = (h[start:] * w).sum(0) / w.sum()
        else:
            v = h[-1] if pooling == "last" else h[0]
        want.append((v / v.norm()).numpy())
    np.testing.assert_allclose(
        m.encode(TEXTS, instruction=INSTRUCTION, batch_size=2), np.stack(want), atol=1e-5
    )


# --- batch invariance -------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ["llama", "qwen2", "mistral"])
@pytest.mark.parametrize("padding_side", ["right", "left"])
@pytest.mark.parametrize("pooling", POOLINGS)
def test_batched_equals_single(tiny_model_dirs, arch, padding_side, pooling):
    m = load(tiny_model_dirs[arch], pooling=pooling, padding_side=padding_side)
    batched = m.encode(TEXTS, instruction=INSTRUCTION, batch_size=2)  # length-sorted, 3 batches
    singles = np.stack([m.encode(t, instruction=INSTRUCTION) for t in TEXTS])
    assert batched.shape == (len(TEXTS), m.embedding_dim)
    assert np.abs(batched - singles).max() <= 1e-5
    # Rows are distinct, so a permutation would not pass the comparison above unnoticed.
    off_diagonal = np.abs(singles[:, None] - singles[None]).max(-1) + np.eye(len(TEXTS))
    assert off_diagonal.min() > 1e-3
    # A different batch composition gives the same rows too.
    reordered = m.encode(TEXTS[::-1], instruction=INSTRUCTION, batch_size=3)
    assert np.abs(reordered[::-1] - singles).max() <= 1e-5


# --- Matryoshka -------------------------------------------------------------------------------------
@pytest.mark.parametrize("k", [1, 8, 17, 64])
def test_dim_truncates_then_renormalizes(tiny_llama_dir, k):
    full = load(tiny_llama_dir, normalize=False).encode(TEXTS, instruction=INSTRUCTION)
    got = load(tiny_llama_dir).encode(TEXTS, instruction=INSTRUCTION, dim=k)
    assert got.shape == (len(TEXTS), k)
    np.testing.assert_allclose(got, normalize(full[:, :k]), atol=1e-5)
    raw = load(tiny_llama_dir, normalize=False).encode(TEXTS, dim=k)
    np.testing.assert_allclose(raw, load(tiny_llama_dir, normalize=False).encode(TEXTS)[:, :k], atol=1e-6)


@pytest.mark.parametrize("bad", [0, -1, 65, 2.5, "8", True])
def test_bad_dim(llama, bad):
    with pytest.raises(ValueError, match="dim"):
        llama.encode(TEXTS, dim=bad)


# --- KV caches --------------------------------------------------------------------------------------
CONTINUATION = " and the dog slept by the fire"


def next_token_logits_from_cache(m: EgtLM, cache: DynamicCache, cont: list[int]) -> torch.Tensor:
    n = cache.get_seq_length()
    with torch.no_grad():
        out = m.model(
            input_ids=torch.tensor([cont]),
            cache=copy.deepcopy(cache),
            attention_mask=torch.ones(1, n + len(cont), dtype=torch.long),
            position_ids=torch.arange(n, n + len(cont))[None],
        )
    return out.logits[0, -1]


def full_next_token_logits(m: EgtLM, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return m.model(input_ids=torch.tensor([ids])).logits[0, -1]


@pytest.mark.parametrize("padding_side", ["right", "left"])
@pytest.mark.parametrize("attention", ["causal", "bidirectional"])
@pytest.mark.parametrize(("arch", "batch_size"), [("llama", 2), ("mistral", 8), ("qwen2", 1)])
def test_get_cache_continues_like_a_full_forward(tiny_model_dirs, arch, attention, padding_side, batch_size):
    m = load(tiny_model_dirs[arch], attention=attention, padding_side=padding_side)
    vectors, caches = m.encode(TEXTS, instruction=INSTRUCTION, get_cache=True, batch_size=batch_size)
    np.testing.assert_allclose(vectors, m.encode(TEXTS, instruction=INSTRUCTION), atol=1e-5)
    assert isinstance(caches, list) and len(caches) == len(TEXTS)
    cont = m.tokenizer(CONTINUATION, add_special_tokens=False)["input_ids"]
    for text, cache in zip(TEXTS, caches, strict=True):
        ids = m.tokenizer(INSTRUCTION + text)["input_ids"]
        assert isinstance(cache, DynamicCache)
        assert cache.get_seq_length() == len(ids)  # padding removed
        assert all(layer.keys.shape[0] == 1 and layer.keys.shape[2] == len(ids) for layer in cache.layers)
        got = next_token_logits_from_cache(m, cache, cont)
        want = full_next_token_logits(m, ids + cont)
        assert (got - want).abs().max() <= 1e-4
    # The caches were copied before use, so they still hold only the texts.
    assert [c.get_seq_length() for c in caches] == [
        len(m.tokenizer(INSTRUCTION + t)["input_ids"]) for t in TEXTS
    ]


def test_get_cache_with_reused_bidirectional_states_is_not_exact(tiny_llama_dir):
    """cache_capture="reuse" keeps the bidirectional states: generation would see different keys."""
    m = load(tiny_llama_dir, attention="bidirectional", cache_capture="reuse")
    _, caches = m.encode(TEXTS[:2], get_cache=True)
    cont = m.tokenizer(CONTINUATION, add_special_tokens=False)["input_ids"]
    ids = m.tokenizer(TEXTS[0])["input_ids"]
    diff = (
        (next_token_logits_from_cache(m, caches[0], cont) - full_next_token_logits(m, ids + cont)).abs().max()
    )
    assert diff > 1e-3


def test_get_cache_single_string_and_last_pooling_eos(tiny_llama_dir):
    m = load(tiny_llama_dir, pooling="last", prompt_format="e5")  # e5 + last: EOS appended
    vec, cache = m.encode("fox", get_cache=True)
    assert vec.shape == (64,)
    assert isinstance(cache, DynamicCache)
    ids = m.tokenizer("fox")["input_ids"] + [m.tokenizer.eos_token_id]  # the EOS the pooling appended
    assert cache.get_seq_length() == len(ids)
    cont = m.tokenizer(CONTINUATION, add_special_tokens=False)["input_ids"]
    assert (
        next_token_logits_from_cache(m, cache, cont) - full_next_token_logits(m, ids + cont)
    ).abs().max() <= 1e-4


# --- bad inputs -------------------------------------------------------------------------------------
def test_none_and_non_strings(llama):
    with pytest.raises(TypeError, match="string"):
        llama.encode(None)
    with pytest.raises(TypeError, match=r"texts\[2\]"):
        llama.encode(["a", "b", 3])
    with pytest.raises(TypeError, match=r"texts\[1\]"):
        llama.encode(["a", None])
    with pytest.raises(TypeError):
        llama.encode(42)


def test_empty_and_whitespace_texts_name_their_indexes(llama):
    with pytest.raises(ValueError, match=r"texts\[1, 3\]"):
        llama.encode(["a", "", "b", " \n\t"])
    with pytest.raises(ValueError, match=r"texts\[0\]"):
        llama.encode("   ")


def test_empty_list_and_single_string_shapes(llama):
    empty = llama.encode([])
    assert isinstance(empty, np.ndarray) and empty.shape == (0, 64) and empty.dtype == np.float32
    assert llama.encode([], dim=8).shape == (0, 8)
    vectors, caches = llama.encode([], get_cache=True)
    assert vectors.shape == (0, 64) and caches == []
    single = llama.encode("fox")
    assert single.shape == (64,)
    np.testing.assert_allclose(single, llama.encode(["fox"])[0], atol=1e-6)
    tensor = llama.encode(["fox", "cat"], convert_to_tensor=True)
    assert isinstance(tensor, torch.Tensor) and tuple(tensor.shape) == (2, 64)


def test_over_long_text_warns_and_truncates(llama):
    long_text = "The quick brown fox jumps over the lazy dog. " * 20
    with pytest.warns(UserWarning, match=r"max_length=16.*truncated"):
        got = llama.encode([long_text, "fox"], instruction="", max_length=16)
    assert got.shape == (2, 64) and np.isfinite(got).all()
    # Truncated = the first 16 tokens of the text, embedded.
    ids = llama.tokenizer(long_text)["input_ids"][:16]
    prefix = llama.tokenizer.decode(ids, skip_special_tokens=True)
    assert llama.tokenizer(prefix)["input_ids"] == ids
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_allclose(got[0], llama.encode(prefix, instruction="", max_length=16), atol=1e-5)


def test_instruction_too_long_for_max_length(llama):
    with pytest.raises(ValueError, match="max_length"):
        llama.encode("fox", instruction=INSTRUCTION, max_length=8)


def test_bad_batch_size_and_max_length(llama):
    for bad in (0, -1, 1.5):
        with pytest.raises(ValueError, match="batch_size"):
            llama.encode(TEXTS, batch_size=bad)
    for bad in (0, 1, -4):
        with pytest.raises(ValueError, match="max_length"):
            llama.encode(TEXTS, max_length=bad)


def test_unknown_encode_kwargs(llama):
    with pytest.raises(TypeError, match="normalise"):
        llama.encode(TEXTS, normalise=True)
    llama.encode(TEXTS[:1], convert_to_numpy=True)  # accepted for MTEB/GritLM callers


def test_generative_mode_refuses_encode(tiny_llama_dir):
    m = load(tiny_llama_dir, mode="generative")
    with pytest.raises(RuntimeError, match="generative"):
        m.encode("fox")


# --- scale and threads ------------------------------------------------------------------------------
def test_huge_batch_shape_and_order(llama):
    words = ["fox", "cat", "dog", "Paris", "France", "mat", "fire", "question"]
    texts = [f"{words[i % 8]} {i} {words[(i * 7) % 8]}" + " the" * (i % 5) for i in range(2000)]
    out = llama.encode(texts, batch_size=400)
    assert out.shape == (2000, 64) and np.isfinite(out).all()
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    for i in (0, 1, 2, 777, 1234, 1999):
        np.testing.assert_allclose(out[i], llama.encode(texts[i]), atol=1e-5)


def test_concurrent_encodes_match_sequential(llama):
    groups = [[f"{w} number {i} by the fire" for i in range(12)] for w in ("fox", "cat", "dog", "Paris")]
    sequential = [llama.encode(g, batch_size=5) for g in groups]
    results: dict[int, list[np.ndarray]] = {}
    errors: list[BaseException] = []

    def work(k: int) -> None:
        try:
            results[k] = [llama.encode(groups[k], batch_size=5) for _ in range(3)]
        except BaseException as err:  # reported in the main thread
            errors.append(err)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for k in range(4):
        for got in results[k]:
            np.testing.assert_allclose(got, sequential[k], atol=1e-5)


# --- sliding-window layers --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def windowed_dirs(tmp_path_factory):
    """Mistral with a 4-token window on every layer; Qwen2 with one full and one 4-token sliding layer."""
    root = tmp_path_factory.mktemp("windowed")
    return {
        "mistral": build_tiny_model(root / "mistral", "mistral", sliding_window=4),
        "qwen2": build_tiny_model(
            root / "qwen2", "qwen2", use_sliding_window=True, sliding_window=4, max_window_layers=1
        ),
    }


@pytest.mark.parametrize("arch", ["mistral", "qwen2"])
@pytest.mark.parametrize("attention", ["causal", "bidirectional"])
@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_sliding_window_layers_keep_their_window(windowed_dirs, arch, attention, padding_side):
    """Texts longer than the window embed as the model's own forward (is_causal as the switch) does."""
    m = load(windowed_dirs[arch], attention=attention, pooling="mean", padding_side=padding_side)
    private = AutoModel.from_pretrained(str(windowed_dirs[arch]), dtype=torch.float32).eval()
    want = []
    for t in TEXTS:
        enc = m.tokenizer(t)
        with torch.no_grad():
            h = private(input_ids=torch.tensor([enc["input_ids"]]), is_causal=attention == "causal")
        v = h.last_hidden_state[0, 1:].double().mean(0)  # everything but BOS
        want.append((v / v.norm()).numpy())
    got = m.encode(TEXTS, instruction="", batch_size=3)  # bare texts, as the reference runs them
    np.testing.assert_allclose(got, np.stack(want), atol=1e-5)


def test_get_cache_beyond_a_sliding_window_is_a_clear_error(windowed_dirs):
    m = load(windowed_dirs["mistral"], attention="causal")
    with pytest.raises(ValueError, match="sliding window"):
        m.encode(TEXTS, instruction="", get_cache=True)
    # Texts that fit the window (the layer keeps window - 1 = 3 tokens) still give exact caches.
    short = "fox"
    ids = m.tokenizer(short)["input_ids"]
    assert len(ids) <= 3
    _, cache = m.encode(short, instruction="", get_cache=True)
    assert cache.get_seq_length() == len(ids)
    cont = m.tokenizer(CONTINUATION, add_special_tokens=False)["input_ids"]
    assert (
        next_token_logits_from_cache(m, cache, cont) - full_next_token_logits(m, ids + cont)
    ).abs().max() <= 1e-4


def test_batches_respect_the_text_and_padded_token_limits():
    from egtlm_core.embedding.encoding import TokenizedText, length_sorted_batches

    lengths = [5, 300, 40, 40, 120, 8, 300, 7]
    items = [TokenizedText(ids=list(range(n)), content_start=0, truncated=False) for n in lengths]
    batches = length_sorted_batches(items, batch_size=3, max_tokens=250)
    assert sorted(i for b in batches for i in b) == list(range(len(items)))  # each text once
    for batch in batches:
        longest = max(lengths[i] for i in batch)
        assert lengths[batch[0]] == longest  # longest first
        assert len(batch) <= 3 and (len(batch) == 1 or len(batch) * longest <= 250)
    assert [[lengths[i] for i in b] for b in batches] == [[300], [300], [120, 40], [40, 8, 7], [5]]
    assert [len(b) for b in length_sorted_batches(items, batch_size=3)] == [3, 3, 2]


def test_token_budget_changes_batching_not_vectors(tiny_llama_dir):
    texts = ["word " * n for n in (3, 60, 8, 120, 5, 30)]
    small = EgtLM(str(tiny_llama_dir), torch_dtype="float32", max_batch_tokens=64).encode(texts)
    big = EgtLM(str(tiny_llama_dir), torch_dtype="float32", max_batch_tokens=None).encode(texts)
    np.testing.assert_allclose(small, big, atol=1e-5)
    assert EgtLM(str(tiny_llama_dir), torch_dtype="float32").max_batch_tokens == 1024  # CPU default
    assert EgtLM(str(tiny_llama_dir), torch_dtype="float32", max_batch_tokens=64).max_batch_tokens == 64
    with pytest.raises(ValueError, match="max_batch_tokens"):
        EgtLM(str(tiny_llama_dir), max_batch_tokens=0)


def test_plain_encode_is_the_symmetric_document_side_and_prompt_name_picks_a_role(tiny_llama_dir):
    """`encode(texts)` is the one symmetric vector every adapter and the server return for texts;
    `prompt_name` selects a side as sentence-transformers does."""
    m = load(tiny_llama_dir, pooling="mean")
    np.testing.assert_array_equal(m.encode(TEXTS), m.encode_documents(TEXTS))
    np.testing.assert_array_equal(m.encode(TEXTS, prompt_name="document"), m.encode_documents(TEXTS))
    np.testing.assert_array_equal(m.encode(TEXTS, prompt_name="query"), m.encode_queries(TEXTS))
    assert not np.allclose(m.encode(TEXTS), m.encode(TEXTS, instruction=""))  # "" is the bare text
    rag = load(tiny_llama_dir, attention="causal", document_context="rag")  # after the RAG head
    np.testing.assert_array_equal(rag.encode(TEXTS[0]), rag.encode_documents(TEXTS[0]))
    with pytest.raises(ValueError, match="Unknown prompt_name 'passage'.*'query', 'document'"):
        m.encode(TEXTS, prompt_name="passage")
    with pytest.raises(TypeError, match="either prompt_name or instruction"):
        m.encode(TEXTS, prompt_name="query", instruction="<|embed|>\n")
