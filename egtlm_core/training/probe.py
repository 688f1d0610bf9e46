"""Generation probes for checkpoint selection: does the model still answer, with and without a passage?

Contrastive training moves the same weights the generator uses, and a checkpoint with the best
STS-B dev score can already repeat itself ("a tower tower in Paris"). The probe answers a fixed,
seeded sample of Natural Questions *dev* questions from their gold passage, exactly as
`EgtLM.answer` does for users (the default RAG prompt, full prefill, greedy), and scores a
SQuAD-style token F1 (and match) against the short answers. The base model's score is measured
once before training; selection keeps only checkpoints that hold a share of it
(`TrainConfig.generation_floor`). The chat probe asks other NQ dev questions *without* a passage
and scores how close each answer stays to the base model's own (token F1): plain chat broke in
run 3 while RAG answers held. Evaluation sets (XQuAD) are never read here.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..evaluation import subsample
from ..evaluation.answers import answer_metrics
from .data import RAGRow, nq_answers, nq_items
from .self_answers import greedy_answers

PROBE_MAX_NEW_TOKENS = 32
CHAT_PROBE_MAX_NEW_TOKENS = 48


@dataclass(frozen=True)
class GenerationProbe:
    """`size` seeded NQ dev questions with a gold passage and a short answer."""

    rows: tuple[RAGRow, ...]
    golds: tuple[tuple[str, ...], ...]  # every accepted short answer of each row
    max_new_tokens: int = PROBE_MAX_NEW_TOKENS

    @classmethod
    def nq_dev(cls, size: int, seed: int = 0, root: Any = None) -> GenerationProbe:
        if size < 1:
            raise ValueError(f"A generation probe needs at least one question, got size={size!r}.")
        answered = [(i, golds) for i in nq_items(root, "dev") if (golds := tuple(nq_answers(i)))]
        picked = subsample(answered, size, seed=seed)
        rows = tuple(RAGRow(i["question_text"], (i["paragraph_text"],), golds[0]) for i, golds in picked)
        return cls(rows, tuple(golds for _, golds in picked))

    def run(self, lm: Any) -> dict[str, Any]:
        """{"match": % of answers containing a gold span, "f1": mean token F1 (%), "answers", "seconds"}.

        Selection reads F1: NQ's gold spans are long and a 24-question match moves in steps of
        4 points, while F1 moves with every answer."""
        start = time.perf_counter()
        answers = [
            lm.answer(
                r.question, list(r.documents), reuse_cache=False, max_new_tokens=self.max_new_tokens
            ).text
            for r in self.rows
        ]
        scores = [answer_metrics(a, g) for a, g in zip(answers, self.golds, strict=True)]
        return {
            "match": 100.0 * float(np.mean([m["match"] for m in scores])),
            "f1": 100.0 * float(np.mean([m["f1"] for m in scores])),
            "answers": answers,
            "seconds": time.perf_counter() - start,
        }


@dataclass(frozen=True)
class ChatProbe:
    """`size` seeded NQ dev questions asked as plain chat (no passage), greedy as `EgtLM.chat`."""

    prompts: tuple[str, ...]
    max_new_tokens: int = CHAT_PROBE_MAX_NEW_TOKENS

    @classmethod
    def nq_dev(cls, size: int, seed: int = 0, root: Any = None) -> ChatProbe:
        if size < 1:
            raise ValueError(f"A chat probe needs at least one question, got size={size!r}.")
        questions = [i["question_text"].strip() for i in nq_items(root, "dev")]
        picked = subsample(questions, size, seed=seed + 1)  # other questions than the RAG probe's
        return cls(tuple(q if q.endswith("?") else q + "?" for q in picked))

    def answers(self, lm: Any) -> list[str]:
        return greedy_answers(
            lm, [[{"role": "user", "content": p}] for p in self.prompts], self.max_new_tokens
        )

    @staticmethod
    def agreement(answers: list[str], base: list[str]) -> float:
        """Mean token F1 (%) between each answer and the base model's answer to the same prompt."""
        if len(answers) != len(base):
            raise ValueError(f"{len(answers)} answers against {len(base)} base answers.")
        return 100.0 * float(
            np.mean([answer_metrics(a, [b])["f1"] for a, b in zip(answers, base, strict=True)])
        )
