from __future__ import annotations

import math

import numpy as np
import pytest

from egtlm_core import EgtLM
from egtlm_core.evaluation import read_scifact, read_xquad
from egtlm_core.evaluation.datasets import RetrievalSet
from egtlm_core.evaluation.retrieval import (
    corpus_subset,
    evaluate_retrieval,
    ndcg_at_k,
    qa_as_retrieval,
    recall_at_k,
    reciprocal_rank,
    top_k,
)


def test_ndcg_graded_toy_ranking_by_hand():
    # grades: a=3, b=2, c=1, d=0 (judged, not relevant); x, y unjudged
    qrels = {"a": 3, "b": 2, "c": 1, "d": 0}
    ranking = ["x", "b", "d", "a", "y", "c"]
    # DCG  = 2/log2(3) + 3/log2(5) + 1/log2(7)      (ranks 2, 4, 6; linear gain, trec_eval)
    # IDCG = 3/log2(2) + 2/log2(3) + 1/log2(4)
    dcg = 2 / 1.5849625007211563 + 3 / 2.321928094887362 + 1 / 2.807354922057604
    idcg = 3 / 1.0 + 2 / 1.5849625007211563 + 1 / 2.0
    assert ndcg_at_k(ranking, qrels) == pytest.approx(dcg / idcg)
    assert ndcg_at_k(["a", "b", "c"], qrels) == pytest.approx(1.0)
    # cut at 3: only "b" (rank 2) counts; the ideal is the best 3 grades
    assert ndcg_at_k(ranking, qrels, k=3) == pytest.approx((2 / math.log2(3)) / idcg)
    assert ndcg_at_k(["x", "y"], qrels) == 0.0
    with pytest.raises(ValueError, match="relevant"):
        ndcg_at_k(ranking, {"d": 0})


def test_ndcg_ideal_cut_at_k_with_many_relevant():
    qrels = {f"r{i}": 1 for i in range(12)}
    ranking = [f"r{i}" for i in range(10)]
    assert ndcg_at_k(ranking, qrels) == pytest.approx(1.0)  # ideal DCG@10, not over all 12


def test_recall_and_reciprocal_rank():
    qrels = {"a": 1, "b": 2, "c": 0}
    ranking = ["c", "x", "a", "y", "b"]
    assert recall_at_k(ranking, qrels, 1) == 0.0
    assert recall_at_k(ranking, qrels, 3) == 0.5
    assert recall_at_k(ranking, qrels, 5) == 1.0
    assert reciprocal_rank(ranking, qrels) == pytest.approx(1 / 3)
    assert reciprocal_rank(ranking, qrels, k=2) == 0.0


def test_top_k_best_first_and_chunked():
    rng = np.random.default_rng(0)
    q, d = rng.normal(size=(7, 4)), rng.normal(size=(20, 4))
    got = top_k(q, d, 5, chunk=3)
    for row, qv in zip(got, q, strict=True):
        assert list(row) == sorted(range(20), key=lambda i: -(qv @ d[i]))[:5]
    assert top_k(q, d, 50).shape == (7, 20)


class Scores:
    """Documents are one-hot vectors and a query's vector is its score per document, so the
    ranking each query gets is written down in the test."""

    def __init__(self, doc_order, query_scores):
        self.doc_order, self.query_scores = doc_order, query_scores

    def encode_documents(self, docs, **kw):
        eye = np.eye(len(self.doc_order), dtype=np.float32)
        return np.stack([eye[self.doc_order.index(d["text"])] for d in docs])

    def encode_queries(self, queries, **kw):
        return np.array([self.query_scores[q] for q in queries], dtype=np.float32)

    encode = encode_queries


def test_evaluate_retrieval_known_rankings(data_root):
    data = read_scifact("test", root=data_root)
    texts = [data.corpus[d]["text"] for d in ("d1", "d2", "d3", "d4")]
    # query 1 ranks d3, d1, d2, d4 (its one relevant document, d1, second);
    # query 2 ranks d2, d1, d4, d3 (grade-2 d2 first, grade-1 d4 third)
    enc = Scores(texts, {data.queries["1"]: [0.5, 0.2, 0.9, 0.1], data.queries["2"]: [0.6, 0.9, 0.1, 0.3]})
    result = evaluate_retrieval(enc, data, ks=(1, 2, 3))
    ndcg1 = (1 / math.log2(3)) / 1.0
    ndcg2 = (2 / math.log2(2) + 1 / math.log2(4)) / (2 / math.log2(2) + 1 / math.log2(3))
    assert result["ndcg@10"] == pytest.approx((ndcg1 + ndcg2) / 2)
    assert result["mrr@10"] == pytest.approx((1 / 2 + 1) / 2)
    assert result["recall@1"] == pytest.approx((0 + 1 / 2) / 2)
    assert result["recall@2"] == pytest.approx((1 + 1 / 2) / 2)
    assert result["recall@3"] == pytest.approx(1.0)
    assert result["queries"] == 2 and result["documents"] == 4


def test_corpus_subset_keeps_judged_documents(data_root):
    data = read_scifact("test", root=data_root)
    sub = corpus_subset(data, 3, seed=0)
    assert {"d1", "d2", "d4"} == set(sub.corpus)
    assert corpus_subset(data, None) is data
    with pytest.raises(ValueError, match="below the 3 judged"):
        corpus_subset(data, 2)


def test_qa_as_retrieval(data_root):
    data = qa_as_retrieval(read_xquad(root=data_root))
    assert data.qrels == {"q1": {"p0": 1}, "q2": {"p0": 1}, "q3": {"p1": 1}}
    assert data.corpus["p1"]["text"].startswith("The quick brown fox")


def test_evaluate_retrieval_tiny_model_equals_independent_computation(tiny_llama_dir, data_root):
    model = EgtLM(str(tiny_llama_dir), torch_dtype="float32")
    data: RetrievalSet = qa_as_retrieval(read_xquad(root=data_root))
    result = evaluate_retrieval(model, data, ks=(1,))
    paragraphs = model.encode_documents([d["text"] for d in data.corpus.values()])
    hits = 0
    for qid, question in data.queries.items():
        best = int(np.argmax(paragraphs @ model.encode_queries(question)))
        hits += data.qrels[qid] == {f"p{best}": 1}
    assert result["recall@1"] == pytest.approx(hits / 3)
    assert result["queries"] == 3 and result["documents_s"] >= 0
    limited = evaluate_retrieval(model, data, ks=(1,), limit=2)
    assert limited["queries"] == 2 and limited["documents"] == 2
