"""Semantic textual similarity: Spearman correlation of embedding cosines with gold scores.

The metric SBERT and MTEB report for STS-B (`cosine_spearman`). The model is called through its
public API, so the number is what a user of `EgtLM()` (or `EgtLMEmbeddings()`) gets.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, Literal, Protocol

import numpy as np

from .datasets import ScoredPair

# "plain": `encode(texts)`, the call a user types first (the model's symmetric side, which is the
# document side); "bare": `encode(texts, instruction="")`, the texts with no instruction at all.
Side = Literal["document", "query", "plain", "bare"]
SIDES: tuple[str, ...] = ("document", "query", "plain", "bare")


class Encoder(Protocol):
    """What the evaluators need from a model: `EgtLM`'s three encode methods."""

    def encode(self, texts: Any, **kwargs: Any) -> Any: ...
    def encode_queries(self, queries: Any, **kwargs: Any) -> Any: ...
    def encode_documents(self, documents: Any, **kwargs: Any) -> Any: ...


def embed(model: Encoder, texts: Sequence[Any], side: Side) -> np.ndarray:
    """Embed with the model's configured instruction for `side` (see `SIDES`)."""
    if side == "document":
        vectors = model.encode_documents(list(texts))
    elif side == "query":
        vectors = model.encode_queries(list(texts))
    elif side == "plain":
        vectors = model.encode(list(texts))
    elif side == "bare":
        vectors = model.encode(list(texts), instruction="")
    else:
        raise ValueError(f"Unknown side {side!r}; expected one of {SIDES}.")
    return np.asarray(vectors, dtype=np.float32)


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine of row i of `a` with row i of `b` (vectors need not be normalised)."""
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"Expected two [n, d] arrays of the same shape, got {a.shape} and {b.shape}.")
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return (a * b).sum(axis=1) / np.maximum(norms, 1e-12)


def spearman(predicted: Sequence[float] | np.ndarray, gold: Sequence[float] | np.ndarray) -> float:
    """Spearman's rank correlation (ties get average ranks), via scipy (imported here: scipy.stats
    costs ~0.6 s, which every `egtlm` command would pay through the CLI's `eval` options)."""
    from scipy.stats import spearmanr

    if len(predicted) != len(gold) or len(gold) < 2:
        raise ValueError(
            f"Need two equally long score lists of ≥ 2 items, got {len(predicted)} and {len(gold)}."
        )
    return float(spearmanr(predicted, gold).statistic)


def evaluate_sts(model: Encoder, pairs: Sequence[ScoredPair], side: Side = "document") -> dict[str, Any]:
    """Spearman of cosine(text1, text2) against the gold scores.

    `side="document"` embeds both texts as `encode_documents` does (what `EgtLMEmbeddings` does for
    a list of texts, and the symmetric choice); "plain" (`encode(texts)`) equals it; "query" and
    "bare" are there for comparison.
    Each distinct text is embedded once.

    Example:
        >>> evaluate_sts(EgtLM(), read_stsb("dev"))["spearman"]
    """
    if not pairs:
        raise ValueError("evaluate_sts needs at least two pairs, got none.")
    start = time.perf_counter()
    texts = list(dict.fromkeys(t for p in pairs for t in (p.text1, p.text2)))
    vectors = embed(model, texts, side)
    row = {t: i for i, t in enumerate(texts)}
    a = vectors[[row[p.text1] for p in pairs]]
    b = vectors[[row[p.text2] for p in pairs]]
    return {
        "spearman": spearman(cosine_rows(a, b), [p.score for p in pairs]),
        "pairs": len(pairs),
        "side": side,
        "seconds": time.perf_counter() - start,
    }
