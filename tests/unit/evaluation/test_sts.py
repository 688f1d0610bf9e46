from __future__ import annotations

import numpy as np
import pytest

from egtlm_core import EgtLM
from egtlm_core.evaluation import ScoredPair, evaluate_sts, read_stsb, spearman
from egtlm_core.evaluation.sts import cosine_rows


def hand_ranks(values: list[float]) -> list[float]:
    """1-based ranks, ties sharing the mean of the positions they occupy."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def hand_spearman(x: list[float], y: list[float]) -> float:
    rx, ry = hand_ranks(x), hand_ranks(y)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry, strict=True))
    vx = sum((a - mx) ** 2 for a in rx) ** 0.5
    vy = sum((b - my) ** 2 for b in ry) ** 0.5
    return cov / (vx * vy)


def test_spearman_matches_hand_ranks_with_ties():
    x = [0.1, 0.4, 0.4, 0.9, -0.2, 0.4, 0.7]
    y = [1.0, 2.0, 3.0, 5.0, 0.0, 2.0, 4.5]
    # no ties: 1 - 6 Σd² / (n(n²-1))
    a, b = [3.0, 1.0, 2.0, 5.0, 4.0], [2.0, 1.0, 4.0, 3.0, 5.0]
    d2 = sum((p - q) ** 2 for p, q in zip(hand_ranks(a), hand_ranks(b), strict=True))
    assert spearman(a, b) == pytest.approx(1 - 6 * d2 / (5 * (25 - 1)))
    assert spearman(x, y) == pytest.approx(hand_spearman(x, y))
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="equally long"):
        spearman([1, 2], [1])


def test_cosine_rows_unnormalised():
    a = np.array([[3.0, 4.0], [1.0, 0.0]])
    b = np.array([[6.0, 8.0], [0.0, 2.0]])
    assert cosine_rows(a, b) == pytest.approx([1.0, 0.0])


class Table:
    """An encoder with fixed vectors: shows which method `evaluate_sts` calls for each side."""

    def __init__(self, vectors: dict[str, list[float]]):
        self.vectors, self.calls = vectors, []

    def _look(self, texts):
        return np.array([self.vectors[t] for t in texts], dtype=np.float32)

    def encode(self, texts, **kw):
        self.calls.append("plain")
        return self._look(texts)

    def encode_queries(self, texts, **kw):
        self.calls.append("query")
        return self._look(texts)

    def encode_documents(self, texts, **kw):
        self.calls.append("document")
        return self._look(texts)


def test_evaluate_sts_with_known_vectors():
    angles = {"a": 0.0, "b": 0.3, "c": 1.2, "d": 0.1, "e": 2.0}
    enc = Table({k: [np.cos(v), np.sin(v)] for k, v in angles.items()})
    pairs = [
        ScoredPair("a", "b", 4.0),
        ScoredPair("a", "c", 1.0),
        ScoredPair("a", "d", 5.0),
        ScoredPair("b", "e", 0.0),
    ]
    result = evaluate_sts(enc, pairs)
    assert result["spearman"] == pytest.approx(1.0) and result["pairs"] == 4
    assert enc.calls == ["document"]  # one call, each distinct text once
    evaluate_sts(enc, pairs, side="query")
    evaluate_sts(enc, pairs, side="plain")
    assert enc.calls == ["document", "query", "plain"]
    with pytest.raises(ValueError, match="Unknown side 'both'"):
        evaluate_sts(enc, pairs, side="both")  # type: ignore[arg-type]


def test_evaluate_sts_tiny_model_equals_independent_computation(tiny_llama_dir, data_root):
    model = EgtLM(str(tiny_llama_dir), torch_dtype="float32")
    pairs = read_stsb("test", root=data_root)
    got = evaluate_sts(model, pairs)["spearman"]
    cos = []
    for p in pairs:
        u, v = model.encode_documents([p.text1, p.text2])
        cos.append(float(u @ v / (np.linalg.norm(u) * np.linalg.norm(v))))
    assert got == pytest.approx(hand_spearman(cos, [p.score for p in pairs]), abs=1e-6)
