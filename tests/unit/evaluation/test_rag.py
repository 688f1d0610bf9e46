from __future__ import annotations

import pytest

from egtlm_core import EgtLM
from egtlm_core.evaluation import read_xquad
from egtlm_core.evaluation.answers import answer_metrics, f1_score, normalize
from egtlm_core.evaluation.rag import evaluate_rag


def test_normalize_squad_rules():
    assert normalize("The  Eiffel-Tower, in PARIS!") == "eiffeltower in paris"
    assert normalize("an apple a day") == "apple day"


def test_f1_by_hand():
    # prediction tokens: capital, is, paris, france ; gold: paris, france -> P = 2/4, R = 2/2
    assert f1_score("The capital is Paris, France.", "Paris France") == pytest.approx(2 * 0.5 * 1 / 1.5)
    assert f1_score("Berlin", "Paris") == 0.0
    # repeated tokens count once per occurrence in both: pred [a1, a1, b], gold [a1, c] -> 1 common
    assert f1_score("a1 a1 b", "a1 c") == pytest.approx(2 * (1 / 3) * (1 / 2) / (1 / 3 + 1 / 2))


def test_answer_metrics_match_is_containment_case_insensitive():
    m = answer_metrics("The answer is THE LAZY DOG, I think.", ["the lazy dog", "a dog"])
    assert m["match"] == 1.0 and m["em"] == 0.0
    assert m["f1"] == pytest.approx(
        max(f1_score("The answer is THE LAZY DOG, I think.", g) for g in ["the lazy dog", "a dog"])
    )
    assert answer_metrics("Lazy dog.", ["the lazy dog"]) == {"match": 1.0, "f1": 1.0, "em": 1.0}
    assert answer_metrics("no idea", ["Paris"])["match"] == 0.0
    with pytest.raises(ValueError, match="gold"):
        answer_metrics("x", [])


class Echo:
    """Answers with the first sentence of the paragraph it is given; records the calls."""

    def __init__(self):
        self.calls = []

    def answer(self, question, documents=None, **kwargs):
        self.calls.append((question, list(documents), kwargs))
        text = documents[0].split(".")[0]
        return type("R", (), {"text": text})()


def test_evaluate_rag_gives_the_gold_paragraph_and_scores(data_root):
    qa = read_xquad(root=data_root)
    model = Echo()
    result = evaluate_rag(model, qa, limit=None, max_new_tokens=7)
    # q1 (Paris) and q2 (Berlin) get "Paris is the capital of France"; q3 gets "The quick brown fox ..."
    assert [c[1] for c in model.calls] == [[qa.paragraphs[0]], [qa.paragraphs[0]], [qa.paragraphs[1]]]
    assert all(c[2] == {"max_new_tokens": 7, "reuse_cache": False} for c in model.calls)
    assert result["match"] == pytest.approx(100 * 2 / 3)  # Paris yes, Berlin no, "the lazy dog" yes
    expected_f1 = [
        f1_score("Paris is the capital of France", "Paris"),
        0.0,
        f1_score("The quick brown fox jumps over the lazy dog", "the lazy dog"),
    ]
    assert result["f1"] == pytest.approx(100 * sum(expected_f1) / 3)
    assert result["questions"] == 3 and [r["id"] for r in result["rows"]] == ["q1", "q2", "q3"]
    assert evaluate_rag(Echo(), qa, limit=2)["questions"] == 2


def test_evaluate_rag_tiny_model_runs_through_answer(tiny_llama_dir, data_root):
    model = EgtLM(str(tiny_llama_dir), torch_dtype="float32")
    qa = read_xquad(root=data_root)
    result = evaluate_rag(model, qa, limit=2, max_new_tokens=4)
    for row, q in zip(result["rows"], [qa.questions[0], qa.questions[2]], strict=True):
        direct = model.answer(q.question, [qa.paragraphs[q.paragraph]], max_new_tokens=4, reuse_cache=False)
        assert row["answer"] == direct.text
        assert row["match"] == answer_metrics(direct.text, q.answers)["match"]
