"""Probe: can a head on the shipped adapter's pooled vectors, fit to a teacher, lift STS-B?

A cheap alternative to distilling through the whole model (docs/model_card.md, "Heads on the
pooled vectors"): embed the training texts once with `EgtLM(normalize=False).encode` (the plain call,
before normalisation), fit (1) a ridge map and (2) a small MLP from those vectors to the teacher's
unit vectors, then score STS-B dev (selects) and test (reports) through the head. Training texts
only: STS-B train, SNLI/MNLI, NQ, SciFact train, PubMedQA (never an evaluation split).

    python scripts/experiments/embedding_head_probe.py --out runs/head   # ~13 min embedding on 2 cores
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

from egtlm_core import EgtLM
from egtlm_core.evaluation import read_stsb
from egtlm_core.training.data import ScoredPairRow, load_source
from egtlm_core.training.teachers import teacher_vectors

SOURCES = {"stsb": None, "snli": 6000, "mnli": 4000, "nq": 3000, "scifact": 1500, "pubmedqa": 1000}


def training_texts(scale: float, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    texts: list[str] = []
    for name, limit in SOURCES.items():
        found: list[str] = []
        for row in load_source(name):
            found += (
                [row.text1, row.text2] if isinstance(row, ScoredPairRow) else [row.query, row.pos, *row.negs]
            )
        unique = [t for t in dict.fromkeys(found) if isinstance(t, str)]
        rng.shuffle(unique)
        texts += unique[: int((limit or len(unique)) * scale)]
    return list(dict.fromkeys(texts))


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def spearman(a: np.ndarray, b: np.ndarray, gold: np.ndarray) -> float:
    return float(spearmanr((unit(a) * unit(b)).sum(-1), gold).correlation)


def fit_ridge(x: np.ndarray, t: np.ndarray, lam: float):
    mu, tmu = x.mean(0), t.mean(0)
    gram = (x - mu).T @ (x - mu)
    w = np.linalg.solve(gram + lam * np.trace(gram) / len(gram) * np.eye(len(gram)), (x - mu).T @ (t - tmu))
    return lambda f: (f - mu) @ w + tmu


def fit_mlp(x: np.ndarray, t: np.ndarray, hidden: int, epochs: int, seed: int = 0):
    """MLP to the teacher's space: cosine to each text's teacher vector + MSE of in-batch similarities."""
    torch.manual_seed(seed)
    xs, ts = torch.tensor(x), torch.tensor(t)
    mu, sd = xs.mean(0), xs.std(0) + 1e-6
    net = torch.nn.Sequential(
        torch.nn.Linear(x.shape[1], hidden),
        torch.nn.GELU(),
        torch.nn.Dropout(0.1),
        torch.nn.Linear(hidden, t.shape[1]),
    )
    opt = torch.optim.AdamW(net.parameters(), 1e-3, weight_decay=0.01)
    for _ in range(epochs):
        net.train()
        for idx in torch.randperm(len(xs)).split(256):
            y = torch.nn.functional.normalize(net((xs[idx] - mu) / sd), dim=-1)
            loss = 10 * ((y @ y.T - ts[idx] @ ts[idx].T) ** 2).mean() + (1 - (y * ts[idx]).sum(1)).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval()

    def head(f: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return net((torch.tensor(f) - mu) / sd).numpy()

    return head


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="runs/head")
    ap.add_argument("--teacher", default="all-minilm-l6-v2")
    ap.add_argument(
        "--scale", type=float, default=1.0, help="fraction of each source's texts (0.02: a smoke run)"
    )
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    texts = training_texts(args.scale)
    lm = EgtLM(normalize=False)
    splits = {s: read_stsb(s) for s in ("dev", "test")}
    gold = {s: np.array([p.score for p in pairs]) for s, pairs in splits.items()}
    pairs = {
        s: (lm.encode([p.text1 for p in ps]), lm.encode([p.text2 for p in ps])) for s, ps in splits.items()
    }
    x = lm.encode(texts, batch_size=32, show_progress_bar=True).astype(np.float64)
    t = teacher_vectors(args.teacher, texts, out / "teachers", 128).lookup(texts).numpy().astype(np.float64)

    def scores(head) -> dict[str, float]:
        return {s: spearman(head(a), head(b), gold[s]) for s, (a, b) in pairs.items()}

    report: dict = {"texts": len(texts), "teacher": args.teacher, "plain_encode": scores(lambda f: f)}
    report["ridge"] = {str(lam): scores(fit_ridge(x, t, lam)) for lam in (1e-3, 1e-2, 1e-1, 1.0)}
    report["mlp_1024"] = scores(fit_mlp(x.astype(np.float32), t.astype(np.float32), 1024, args.epochs))
    (out / "head_probe.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
