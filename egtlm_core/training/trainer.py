"""Train a unified model: mixed embedding and generative losses on the Hugging Face `Trainer`, LoRA by peft.

GritLM-style batches: each step draws one source (by weight) and takes `batch_size` of its rows, so
in-batch negatives come from the same task. The model is an `EgtLM` whose causal LM is wrapped by
peft in place, so every embedding pass runs `encode`'s own code. Checkpoint selection uses STS-B
*dev* only; the output directory loads with `EgtLM(output_dir)` (the adapter, its base, and the
embedding settings it was trained with) — no conversion step.
"""

from __future__ import annotations

import json
import logging
import random
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import IterableDataset

from ..evaluation import evaluate_sts, subsample
from ..loading.sources import DEFAULT_BASE, SETTINGS_FILE
from ..model import EgtLM
from .config import SourceSpec, TrainConfig
from .data import DOCUMENT, QUERY, ChatRow, PromptRow, RAGRow, Row, ScoredPairRow, Triplet, load_source
from .losses import (
    IGNORE,
    cosent,
    distillation_kl,
    info_nce,
    margin_loss,
    next_token_loss,
    similarity_kl,
    similarity_mse,
)
from .passes import SAMPLE_MAX_TOKENS, block_logits, chat_batch, chat_labels, embed, rag_sample
from .self_answers import answer_prompts
from .teachers import TeacherVectors

logger = logging.getLogger(__name__)


class MixedBatches(IterableDataset):
    """An endless stream of one-source batches, drawn by the sources' weights (seeded)."""

    def __init__(self, sources: Sequence[tuple[SourceSpec, list[Row]]], batch_size: int, seed: int = 0):
        self.sources, self.batch_size, self.seed = list(sources), batch_size, seed

    def __iter__(self) -> Iterator[dict[str, Any]]:
        rng = random.Random(self.seed)
        orders = [rng.sample(range(len(rows)), len(rows)) for _, rows in self.sources]
        cursors = [0] * len(self.sources)
        weights = [spec.weight for spec, _ in self.sources]
        while True:
            i = rng.choices(range(len(self.sources)), weights)[0]
            spec, rows = self.sources[i]
            size = min(spec.batch_size or self.batch_size, len(rows))
            take = [orders[i][(cursors[i] + j) % len(rows)] for j in range(size)]
            cursors[i] += len(take)
            batch = [rows[j] for j in take]
            # accelerate reads the batch size off the first tensor of a batch: give it one
            yield {"size": torch.zeros(len(take)), "source": i, "loss": spec.loss, "rows": batch}


MAX_RAG_CHARS = 3000  # a distillation sample's documents: ~750 tokens of prose


def with_distractors(
    rows: list[RAGRow],
    k: int,
    seed: int,
    max_chars: int = MAX_RAG_CHARS,
    fits: Callable[[RAGRow], bool] | None = None,
) -> list[RAGRow]:
    """RAG rows with up to k - 1 other rows' documents added and the gold document at a random slot;
    a distractor is added only while the documents stay within `max_chars` and the sample `fits`
    (its token count: dense text runs to ~2 characters a token), and a row whose gold document alone
    does not is left out, with a warning."""
    rng = random.Random(seed)
    pool = [d for r in rows for d in r.documents]
    fits = fits or (lambda row: True)
    kept = [
        r for r in rows if len(r.documents[0]) <= max_chars and fits(replace(r, documents=r.documents[:1]))
    ]
    if len(kept) < len(rows):
        logger.warning(
            "%d of %d RAG rows have a gold document over %d characters or the sample token budget; "
            "left out of distillation.",
            len(rows) - len(kept),
            len(rows),
            max_chars,
        )
    out = []
    for row in kept:
        docs = list(row.documents[:1])
        for d in rng.sample(pool, k):
            if len(docs) < k and d not in row.documents and sum(map(len, docs)) + len(d) <= max_chars:
                if fits(replace(row, documents=(*docs, d))):
                    docs.append(d)
        rng.shuffle(docs)
        out.append(replace(row, documents=tuple(docs)))
    return out


class UnifiedTrainer:
    """The losses of one step over an `EgtLM` (whose LM may be a peft model) — used by `Trainer`."""

    def __init__(self, lm: EgtLM, model: Any, plan: TrainConfig, teachers: TeacherVectors | None = None):
        self.lm, self.model, self.plan, self.teachers = lm, model, plan, teachers
        self.recent: dict[str, list[float]] = {}  # per-source losses since the last `drain`

    def loss(self, batch: dict[str, Any]) -> torch.Tensor:
        """The loss of one single-source batch times its source's `scale`; the log keeps it unscaled,
        per source. A KL anchor is ~0.1 where InfoNCE is ~1.5: under Adam, whose step size the large
        gradients set, an unscaled anchor barely pulls (run 4 of the default recipe)."""
        value = self._loss(batch["loss"], batch["rows"])
        index = batch.get("source")
        name = self._log_name(index) if index is not None else batch["loss"]
        self.recent.setdefault(name, []).append(float(value.detach()))
        return value if index is None else value * self.plan.sources[index].scale

    def _log_name(self, index: int) -> str:
        """A source's name in the log: its set, and its loss where one set feeds two losses."""
        spec = self.plan.sources[index]
        stem = Path(spec.name).stem
        shared = sum(Path(s.name).stem == stem for s in self.plan.sources) > 1
        return f"{stem}_{spec.loss}" if shared else stem

    def drain(self) -> dict[str, float]:
        """Mean loss per source since the last call (`loss/<source>`): with one source per step the
        mixed loss jumps between tasks, so the curve is only readable per source."""
        means = {f"loss/{k}": sum(v) / len(v) for k, v in self.recent.items() if v}
        self.recent.clear()
        return means

    def _loss(self, kind: str, rows: list[Any]) -> torch.Tensor:
        if kind == "contrastive":
            return self._contrastive(rows)
        if kind == "margin":
            return self._margin(rows)
        if kind == "cosent":
            u = embed(self.lm, [r.text1 for r in rows], DOCUMENT, self.plan.max_length)
            v = embed(self.lm, [r.text2 for r in rows], DOCUMENT, self.plan.max_length)
            scores = torch.tensor([r.score for r in rows], device=u.device)
            loss = cosent(u, v, scores, self.plan.cosent_scale)
            return loss + self._taught(u, v, [r.text1 for r in rows], [r.text2 for r in rows])
        if kind == "generative":
            chats = [r if isinstance(r, ChatRow) else as_chat(r) for r in rows]
            inputs = {k: v.to(self.lm.device) for k, v in chat_batch(self.lm, chats).items()}
            logits = self.model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits
            return next_token_loss(logits, inputs["labels"])
        if kind == "distill":
            return torch.stack([self._distill(r) for r in rows]).mean()
        if kind == "anchor":
            return torch.stack([self._anchor(r) for r in rows]).mean()
        raise ValueError(f"Unknown loss {kind!r}.")

    def _contrastive(self, rows: list[Triplet]) -> torch.Tensor:
        side = DOCUMENT if all(r.symmetric for r in rows) else QUERY
        q = embed(self.lm, [r.query for r in rows], side, self.plan.max_length)
        p = embed(self.lm, [r.pos for r in rows], DOCUMENT, self.plan.max_length)
        negs = [n for r in rows for n in r.negs]
        n = embed(self.lm, negs, DOCUMENT, self.plan.max_length) if negs else None
        loss = info_nce(q, p, n, self.plan.temperature)
        candidates = p if n is None else torch.cat([p, n])
        return loss + self._taught(q, candidates, [r.query for r in rows], [r.pos for r in rows] + negs)

    def _taught(
        self, queries: torch.Tensor, candidates: torch.Tensor, qs: list[Any], cs: list[Any]
    ) -> torch.Tensor:
        """The teacher losses of one embedding batch times `teacher_weight` (zero without teachers):
        every query-candidate and candidate-candidate similarity gets the teacher's as its target."""
        if self.teachers is None or self.plan.teacher_weight == 0:
            return queries.new_zeros(())
        tq = self.teachers.lookup([body(t) for t in qs], queries.device)
        tc = self.teachers.lookup([body(t) for t in cs], queries.device)
        value = teacher_loss(
            queries, candidates, tq, tc, self.plan.teacher_temperature, self.plan.teacher_mse_weight
        )
        self.recent.setdefault("teacher", []).append(float(value.detach()))
        return value * self.plan.teacher_weight

    def _margin(self, rows: list[Triplet]) -> torch.Tensor:
        pairs = [(r.query, r.pos, 0) for r in rows] + [(r.query, n, 1) for r in rows for n in r.negs]
        u = embed(self.lm, [a for a, _, _ in pairs], DOCUMENT, self.plan.max_length)
        v = embed(self.lm, [b for _, b, _ in pairs], DOCUMENT, self.plan.max_length)
        return margin_loss(u, v, torch.tensor([label for *_, label in pairs]), self.plan.margin)

    def _distill(self, row: RAGRow) -> torch.Tensor:
        ids, groups, start = rag_sample(self.lm, row)
        return self._kl_to_base(ids, groups, start - 1)  # position start-1 predicts the first answer token

    def _anchor(self, row: RAGRow | ChatRow) -> torch.Tensor:
        """KL to the frozen base on the positions that generate, in a full causal pass over a RAG
        prompt (as the generator lays it out) or a conversation: keeps the next-token distribution
        that embedding losses would otherwise drift, on the prompts users send.

        Only positions after the documents (RAG) or those predicting the assistant's turns (chat)
        count. A position's last-layer output is read by nothing after it (the last layer's keys and
        values come from its input), only by the LM head and by pooling: anchoring it at a document
        would pin exactly the states a document's vector is pooled from, and buy no generation."""
        ids, start = anchor_span(self.lm, row)
        return self._kl_to_base(ids, None, start)

    def _kl_to_base(self, ids: list[int], groups: list[int] | None, start: int) -> torch.Tensor:
        """KL(base's full causal pass ‖ student) over positions start .. len-2 of one sample; the student
        runs under the block mask of `groups` (None: plain causal). The last position predicts past
        the sample's end and is left out."""
        keep = len(ids) - start
        with torch.no_grad(), self._teacher():
            teacher = block_logits(self.model, ids, None, keep)
        student = block_logits(self.model, ids, groups, keep)
        mask = torch.ones(1, keep, dtype=torch.bool, device=student.device)
        mask[0, -1] = False
        return distillation_kl(student, teacher, mask, self.plan.distill_temperature)

    def _teacher(self) -> Any:
        """The frozen base: the peft model with its adapter switched off."""
        disable = getattr(self.model, "disable_adapter", None)
        if disable is None:
            raise ValueError(
                "The distill and anchor losses need LoRA training (the base model is the teacher)."
            )
        return disable()


def body(text: Any) -> str:
    """The text of a training text without its task instruction (teachers embed plain text)."""
    return text if isinstance(text, str) else text[1]


def teacher_loss(
    queries: torch.Tensor,
    candidates: torch.Tensor,
    teacher_queries: torch.Tensor,
    teacher_candidates: torch.Tensor,
    temperature: float = 0.05,
    mse_weight: float = 10.0,
) -> torch.Tensor:
    """Ranking KL over each query's candidates, plus `mse_weight` x the similarity MSE of the
    query-candidate matrix and of the candidates among themselves (diagonal left out)."""
    student, teacher = queries @ candidates.T, teacher_queries @ teacher_candidates.T
    among_s, among_t = candidates @ candidates.T, teacher_candidates @ teacher_candidates.T
    off = ~torch.eye(len(candidates), dtype=torch.bool, device=candidates.device)
    mse = similarity_mse(student, teacher)
    if off.any():
        mse = mse + similarity_mse(among_s[off], among_t[off])
    return similarity_kl(student, teacher, temperature) + mse_weight * mse


def teacher_texts(sources: Sequence[tuple[SourceSpec, list[Any]]]) -> list[str]:
    """Every text the embedding losses will embed, once each: what the teachers must have seen."""
    texts: list[str] = []
    for spec, rows in sources:
        if spec.loss not in EMBEDDING_LOSSES:
            continue
        for r in rows:
            if isinstance(r, Triplet):
                texts += [body(r.query), body(r.pos), *(body(n) for n in r.negs)]
            elif isinstance(r, ScoredPairRow):
                texts += [r.text1, r.text2]
    return list(dict.fromkeys(texts))


EMBEDDING_LOSSES = ("contrastive", "cosent")  # the losses `_taught` adds the teacher terms to


def anchor_span(lm: EgtLM, row: RAGRow | ChatRow) -> tuple[list[int], int]:
    """(ids, first anchored position) of an anchor sample: the position after a RAG prompt's last
    document, or the one before a conversation's first assistant token (it predicts that token)."""
    if isinstance(row, RAGRow):
        ids, groups, _ = rag_sample(lm, row)
        return ids, max((i for i, g in enumerate(groups) if g >= 1), default=-1) + 1
    ids, labels = chat_labels(lm.tokenizer, row.messages, SAMPLE_MAX_TOKENS)
    answered = [i for i, label in enumerate(labels) if label != IGNORE]
    if not answered:
        raise ValueError(f"An anchor conversation has no assistant turn to anchor: {row.messages!r:.80}")
    return ids, max(answered[0] - 1, 0)


def as_chat(row: RAGRow) -> ChatRow:
    """A RAG row as a conversation whose assistant turn is the answer (full causal attention)."""
    if not row.answer:
        raise ValueError(f"A generative RAG row needs an answer: {row.question!r:.60}")
    context = "\n\n".join(row.documents)
    user = f"Documents:\n{context}\n\nQuestion: {row.question}"
    return ChatRow(({"role": "user", "content": user}, {"role": "assistant", "content": row.answer}))


# The row kinds each loss trains on; a source holding anything else is an error, never filtered.
ROW_KINDS: dict[str, tuple[type, ...]] = {
    "contrastive": (Triplet,),
    "margin": (Triplet,),
    "cosent": (ScoredPairRow,),
    "generative": (ChatRow, RAGRow),
    "distill": (RAGRow,),
    "anchor": (RAGRow, ChatRow, PromptRow),
}


def check_rows(spec: SourceSpec, rows: Sequence[Any]) -> None:
    """Every row of `spec` must suit its loss; the message counts the rows that do not."""
    kinds = ROW_KINDS[spec.loss]
    wrong = [r for r in rows if not isinstance(r, kinds)]
    if not rows or wrong:
        names = "/".join(k.__name__ for k in kinds)
        found = sorted({type(r).__name__ for r in wrong})
        raise ValueError(
            f"Training set {spec.name!r} has no rows for the {spec.loss!r} loss"
            if not rows
            else f"Training set {spec.name!r}: {len(wrong)} of {len(rows)} rows are {found}, but the "
            f"{spec.loss!r} loss needs {names} rows; give it its own source with a fitting loss."
        )


def load_sources(
    plan: TrainConfig, lm: EgtLM | None = None, losses: Sequence[str] | None = None
) -> list[tuple[SourceSpec, list[Row]]]:
    """Every source's rows, checked against its loss; RAG rows get their distractors, kept within
    the token length a distillation sample may have (`SAMPLE_MAX_TOKENS`, measured with `lm`'s
    tokenizer), and prompts get `lm`'s own answers (`self_answers`): call this before training
    changes `lm`'s weights. `losses` keeps only the sources of those losses."""
    fits = (
        None
        if lm is None
        else (lambda row: len(rag_sample(lm, row, max_length=None)[0]) <= SAMPLE_MAX_TOKENS)
    )
    out = []
    for i, spec in enumerate(plan.sources):
        if losses is not None and spec.loss not in losses:  # (the same sample per source either way)
            continue
        rows: list[Any] = load_source(spec.name)
        check_rows(spec, rows)
        if spec.limit is not None:
            rows = subsample(rows, spec.limit, seed=plan.seed + i)
        if spec.loss in ("distill", "anchor"):  # an anchor source may mix chats, prompts and RAG rows
            rows = _prepared(plan, lm, i, spec, rows, fits)
        logger.info("%s: %d rows (%s loss, weight %s)", spec.name, len(rows), spec.loss, spec.weight)
        out.append((spec, rows))
    return out


def self_answer_cache(plan: TrainConfig, index: int, spec: SourceSpec) -> Path:
    """Where source `index`'s base-model answers are kept for a resumed run."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(spec.name).stem)
    return Path(plan.output_dir) / "self_answers" / f"{index}-{name}.jsonl"


def _prepared(
    plan: TrainConfig, lm: EgtLM | None, index: int, spec: SourceSpec, rows: list[Any], fits: Any
) -> list[Any]:
    rag = [r for r in rows if isinstance(r, RAGRow)]
    prompts = [r for r in rows if isinstance(r, PromptRow)]
    kept = [r for r in rows if isinstance(r, ChatRow)]
    if prompts:
        if lm is None:
            raise ValueError(
                f"Training set {spec.name!r} has prompts to answer; load_sources needs the model."
            )
        kept += answer_prompts(lm, prompts, self_answer_cache(plan, index, spec))
    return kept + (with_distractors(rag, plan.rag_documents, plan.seed, fits=fits) if rag else [])


@dataclass
class TrainResult:
    output_dir: str
    best_step: int
    best_stsb_dev: float
    history: list[dict[str, Any]]


def sts_dev(lm: EgtLM, pairs: Sequence[Any]) -> float:
    return float(evaluate_sts(lm, pairs)["spearman"])


def save_trained(lm: EgtLM, model: Any, plan: TrainConfig, directory: Path) -> None:
    """Adapter (or full weights) + the EgtLM settings, loadable by `EgtLM(directory)`."""
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    if hasattr(model, "peft_config"):
        cfg_path = directory / "adapter_config.json"
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
        cfg["base_model_name_or_path"] = plan.model if plan.model is not None else DEFAULT_BASE
        cfg_path.write_text(json.dumps(cfg, indent=2), encoding="utf-8")
    else:
        lm.tokenizer.save_pretrained(directory)
    settings = {**plan.model_settings, "trained_with": {"max_steps": plan.max_steps}}
    (directory / SETTINGS_FILE).write_text(json.dumps(settings, indent=2), encoding="utf-8")


def run_config(plan: TrainConfig) -> dict[str, Any]:
    """The config as written to the output (sources as plain dicts)."""
    return {**asdict(plan), "sources": [asdict(s) for s in plan.sources]}
