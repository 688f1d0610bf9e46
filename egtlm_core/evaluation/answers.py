"""Answer scoring for extractive QA (SQuAD's normalisation), shared by `egtlm eval` and the benchmarks.

*match*: a normalised gold answer occurs in the normalised output (GritLM's RAG metric; a chatty
model answers in sentences, so exact match is near 0 by design). *f1*: SQuAD token F1, the best
over the gold answers. *em*: exact match after normalisation.
"""

from __future__ import annotations

import collections
import re
import string
from collections.abc import Sequence

_PUNCTUATION = frozenset(string.punctuation)


def normalize(text: str) -> str:
    """SQuAD answer normalisation: lowercase, drop punctuation and articles, collapse whitespace."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def f1_score(prediction: str, gold: str) -> float:
    """SQuAD token F1 between one prediction and one gold answer."""
    pred, ref = normalize(prediction).split(), normalize(gold).split()
    same = sum((collections.Counter(pred) & collections.Counter(ref)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(ref)
    return 2 * precision * recall / (precision + recall)


def answer_metrics(prediction: str, golds: Sequence[str]) -> dict[str, float]:
    """match / f1 / em (each 0-1) of `prediction` against any of `golds`."""
    if not golds:
        raise ValueError("answer_metrics needs at least one gold answer.")
    p = normalize(prediction)
    return {
        "match": float(any(normalize(g) in p for g in golds)),
        "f1": max(f1_score(prediction, g) for g in golds),
        "em": float(any(normalize(g) == p for g in golds)),
    }
