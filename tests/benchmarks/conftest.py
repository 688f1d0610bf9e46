"""A tiny copy of the shared evaluation data (`$EGTLM_DATA_DIR` layout), so the benchmarks' smallest
modes run in CI without ../shared: a few STS-B pairs, SciFact documents/claims/qrels and XQuAD
paragraphs whose questions cover every answer kind `inbedder.py` labels."""

from __future__ import annotations

from pathlib import Path

import pytest
from eval_data import write_scifact, write_stsb, write_xquad

STS = [
    ("A plane is taking off.", "An air plane is taking off.", "5.000"),
    ("A man is playing a flute.", "A man plays the flute.", "4.200"),
    ("A cat sat on the mat.", "The dog slept by the fire.", "0.800"),
    ("Paris is the capital of France.", "Berlin is the capital of Germany.", "1.600"),
    ("The quick brown fox jumps.", "A fast brown fox leaps.", "4.000"),
    ("A woman is slicing onions.", "A man is driving a car.", "0.200"),
]
SCIFACT_DOCS = {
    "d1": ("Foxes", "The quick brown fox jumps over the lazy dog."),
    "d2": ("Capitals", "Paris is the capital of France. Berlin is the capital of Germany."),
    "d3": ("Cats", "A cat sat on the mat while the dog slept by the fire."),
    "d4": ("Retrieval", "Retrieval augmented generation reads documents before answering questions."),
    "d5": ("Numbers", "Numbers like 12345 and words like don't, can't and it's."),
    "d6": ("Rivers", "The river runs past the station below the mountain."),
}
SCIFACT_CLAIMS = {  # id: (claim, judged document, split)
    "1": ("A fox jumps over a dog.", "d1", "test"),
    "2": ("Paris is in France.", "d2", "test"),
    "3": ("Cats sit on mats.", "d3", "test"),
    "4": ("Generation reads documents.", "d4", "train"),
    "5": ("Rivers run past stations.", "d6", "train"),
}
XQUAD = [  # (paragraph, question, answer): two of each kind inbedder.py labels
    ("Ada Lovelace wrote the first program.", "Who wrote the first program?", "Ada Lovelace"),
    ("Alan Turing broke the code.", "Who broke the code?", "Alan Turing"),
    ("The bridge opened in 1932.", "When did the bridge open?", "1932"),
    ("The treaty was signed in March 1815.", "When was the treaty signed?", "March 1815"),
    ("The fox lives in Paris.", "Where does the fox live?", "Paris"),
    ("The cat sat in Berlin.", "Where did the cat sit?", "Berlin"),
    ("The team has 42 players.", "How many players does the team have?", "42"),
    ("The tower is twelve metres high.", "How high is the tower in metres?", "twelve"),
]


def write_tiny_data(root: Path) -> Path:
    root.mkdir(parents=True)
    write_stsb(root, [(split, score, a, b) for split in ("train", "dev", "test") for a, b, score in STS])
    corpus = [{"_id": i, "title": t, "text": x} for i, (t, x) in SCIFACT_DOCS.items()]
    claims = [{"_id": i, "text": c, "metadata": {}} for i, (c, _, _) in SCIFACT_CLAIMS.items()]
    qrels = {
        split: [(q, d, 1) for q, (_, d, s) in SCIFACT_CLAIMS.items() if s == split]
        for split in ("train", "test")
    }
    write_scifact(root, corpus, claims, qrels)
    paragraphs = [
        {"context": c, "qas": [{"id": f"x{i}", "question": q, "answers": [{"text": a}]}]}
        for i, (c, q, a) in enumerate(XQUAD)
    ]
    write_xquad(root, {"data": [{"title": "tiny", "paragraphs": paragraphs}]})
    return root


@pytest.fixture
def tiny_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The tiny data folder, made the readers' default (`$EGTLM_DATA_DIR`, inherited by children)."""
    root = write_tiny_data(tmp_path / "data")
    monkeypatch.setenv("EGTLM_DATA_DIR", str(root))
    return root


@pytest.fixture(scope="session")
def tiny_llama_4k_dir(tmp_path_factory) -> Path:
    """The tiny llama with 4096 positions: the tool-calling prompts (tool schemas in a 400-token BPE)
    leave too few of 512 positions for a grammar's shortest output."""
    from tiny_models import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny4k") / "llama", max_position_embeddings=4096)
