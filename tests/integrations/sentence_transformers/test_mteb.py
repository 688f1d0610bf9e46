"""The module as an `mteb` model: an STS task over STS-B dev and a retrieval task over a SciFact slice,
built from the shared local data and run through mteb's own evaluator (no hub).

mteb's numbers are checked against egtlm's own computation on `EgtLM.encode*` vectors, so they prove
mteb embedded what egtlm embeds: plain text for STS, the query prompt for queries and the document
prompt for documents in retrieval."""

from __future__ import annotations

import math

import mteb
import numpy as np
import pytest
from mteb_tasks import LocalSciFactSlice, LocalSTSBDev
from sentence_transformers_egtlm import to_sentence_transformer

from egtlm_core import EgtLM
from egtlm_core.evaluation import evaluate_sts, read_stsb, subsample

pytestmark = pytest.mark.usefixtures("shared_data")  # STS-B dev and SciFact test from the shared folder


def run(st, tasks) -> dict:
    result = mteb.evaluate(st, tasks, cache=None, show_progress_bar=False, encode_kwargs={"batch_size": 16})
    return {r.task_name: r for r in result.task_results}


def ndcg_at_10(lm: EgtLM, split: dict) -> float:
    """nDCG@10 (binary SciFact grades, gain = grade) of cosine ranking, computed here from scratch."""
    corpus, queries, qrels = split["corpus"], split["queries"], split["relevant_docs"]
    pairs = zip(corpus["title"], corpus["text"], strict=True)
    docs = lm.encode_documents([{"title": t, "text": x} for t, x in pairs])
    scores = lm.encode_queries(list(queries["text"])) @ docs.T
    total = 0.0
    for row, qid in enumerate(queries["id"]):
        top = np.argsort(-scores[row], kind="stable")[:10]
        dcg = sum(qrels[qid].get(corpus["id"][d], 0) / math.log2(rank + 2) for rank, d in enumerate(top))
        ideal = sorted(qrels[qid].values(), reverse=True)[:10]
        total += dcg / sum(g / math.log2(rank + 2) for rank, g in enumerate(ideal))
    return total / len(queries)


@pytest.mark.filterwarnings("ignore:.*were truncated")  # SciFact abstracts in a 400-token BPE
def test_sts_and_retrieval_on_a_tiny_model(tiny_llama_dir):
    lm = EgtLM(str(tiny_llama_dir), torch_dtype="float32", max_length=128)
    st = to_sentence_transformer(lm)
    sts, retrieval = LocalSTSBDev(), LocalSciFactSlice(n_queries=6, n_distractors=20)
    results = run(st, [sts, retrieval])

    scores = results["LocalSTSBDev"].scores["validation"][0]
    ours = evaluate_sts(lm, read_stsb("dev"), side="plain")["spearman"]  # all 1,500 pairs
    assert scores["cosine_spearman"] == pytest.approx(ours, abs=1e-4)
    assert scores["spearman"] == pytest.approx(ours, abs=1e-4)  # the model's own similarity: cosine

    retrieval.load_data()
    mteb_ndcg = results["LocalSciFactSlice"].scores["test"][0]["ndcg_at_10"]
    assert mteb_ndcg == pytest.approx(ndcg_at_10(lm, retrieval.dataset["default"]["test"]), abs=1e-4)


@pytest.mark.slow
def test_default_model_through_mteb():
    """The packaged SmolLM2 (its "auto" dtype): 400 STS-B dev pairs, 15 SciFact queries over ~60
    documents; the full sets took 15 minutes here (each is embedded twice: mteb, then the reference)."""
    lm = EgtLM()
    st = to_sentence_transformer(lm)
    retrieval = LocalSciFactSlice(n_queries=15, n_distractors=45)
    results = run(st, [LocalSTSBDev(limit=400), retrieval])
    sts = results["LocalSTSBDev"].scores["validation"][0]
    ours = evaluate_sts(lm, subsample(read_stsb("dev"), 400), side="plain")["spearman"]
    assert sts["cosine_spearman"] == pytest.approx(ours, abs=2e-3)  # bf16: batches differ slightly
    assert sts["cosine_spearman"] > 0.45  # untrained decoder; a random model scores ~0
    retrieval.load_data()
    ndcg = results["LocalSciFactSlice"].scores["test"][0]["ndcg_at_10"]
    assert ndcg == pytest.approx(ndcg_at_10(lm, retrieval.dataset["default"]["test"]), abs=2e-2)
    print(f"\nSTS-B dev cosine Spearman {sts['cosine_spearman']:.4f}; SciFact slice nDCG@10 {ndcg:.4f}")
