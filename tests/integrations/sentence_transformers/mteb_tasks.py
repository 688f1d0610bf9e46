"""mteb tasks over the shared local data (no hub): STS-B dev and a SciFact slice.

Each subclasses mteb's own abstract task and fills `dataset` from egtlm's readers instead of
`datasets.load_dataset`, so mteb's evaluator, metrics and result objects run unchanged.
"""

from __future__ import annotations

from typing import Any

from datasets import Dataset
from mteb.abstasks.retrieval import AbsTaskRetrieval
from mteb.abstasks.sts import AbsTaskSTS
from mteb.abstasks.task_metadata import TaskMetadata

from egtlm_core.evaluation import read_scifact, read_stsb, subsample

_COMMON: dict[str, Any] = dict(
    category="t2t",
    modalities=["text"],
    eval_langs=["eng-Latn"],
    date=("2017-01-01", "2020-12-31"),
    domains=["Written"],
    task_subtypes=[],
    license="cc-by-sa-4.0",
    annotations_creators="human-annotated",
    dialect=[],
    sample_creation="found",
    bibtex_citation="",
)


class LocalSTSBDev(AbsTaskSTS):
    """STS Benchmark dev (1,500 pairs, or a seeded sample of `limit`) from the shared folder."""

    min_score = 0
    max_score = 5
    metadata = TaskMetadata(
        name="LocalSTSBDev",
        dataset={"path": "local/stsb_en", "revision": "local"},
        description="STS Benchmark dev split read from the local shared data folder.",
        reference="https://ixa2.si.ehu.eus/stswiki",
        type="STS",
        eval_splits=["validation"],
        main_score="cosine_spearman",
        **_COMMON,
    )

    def __init__(self, limit: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.limit = limit

    def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
        if self.data_loaded:
            return
        pairs = subsample(read_stsb("dev"), self.limit)
        rows = {
            "sentence1": [p.text1 for p in pairs],
            "sentence2": [p.text2 for p in pairs],
            "score": [p.score for p in pairs],
        }
        self.dataset = {"validation": Dataset.from_dict(rows)}
        self.data_loaded = True


class LocalSciFactSlice(AbsTaskRetrieval):
    """SciFact test: `n_queries` seeded queries over their relevant documents plus `n_distractors`
    other documents (the whole 5,183-document corpus takes too long on a CPU test machine)."""

    metadata = TaskMetadata(
        name="LocalSciFactSlice",
        dataset={"path": "local/scifact", "revision": "local"},
        description="A seeded slice of BEIR SciFact test read from the local shared data folder.",
        reference="https://github.com/allenai/scifact",
        type="Retrieval",
        eval_splits=["test"],
        main_score="ndcg_at_10",
        **_COMMON,
    )

    def __init__(self, n_queries: int = 20, n_distractors: int = 80, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.n_queries, self.n_distractors = n_queries, n_distractors

    def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
        if self.data_loaded:
            return
        data = read_scifact("test")
        qids = subsample(sorted(data.queries), self.n_queries)
        relevant = {d for q in qids for d in data.qrels[q]}
        others = subsample(sorted(set(data.corpus) - relevant), self.n_distractors)
        doc_ids = sorted(relevant) + others
        corpus = Dataset.from_dict(
            {
                "id": doc_ids,
                "title": [data.corpus[d]["title"] for d in doc_ids],
                "text": [data.corpus[d]["text"] for d in doc_ids],
            }
        )
        queries = Dataset.from_dict({"id": qids, "text": [data.queries[q] for q in qids]})
        qrels = {q: dict(data.qrels[q]) for q in qids}
        split = {"corpus": corpus, "queries": queries, "relevant_docs": qrels, "top_ranked": None}
        self.dataset = {"default": {"test": split}}
        self.data_loaded = True
