"""Hard-negative mining with the current model: for {query, pos} rows, negatives the model ranks high.

Easy random negatives teach a contrastive model little; documents the model itself ranks near the
top but that are not positives are the ones it confuses. For each row the corpus is searched with
the model's query and document embeddings, and `negatives` documents are sampled from the ranks
`rank_min..rank_max` (1 = best; the very top is skipped because unjudged top hits are often
relevant), never a positive. Rows are written as GritLM JSON lines `{"query", "pos", "neg"}`, which
`training.data.read_jsonl` loads.

Resumable: each finished row is one flushed line, and the sample of row i depends only on (seed, i),
so a run started again on the same output counts the complete lines, drops a torn last line, and
continues from the next row; the corpus vectors are kept beside the output, so a resumed run does
not re-embed the corpus.
"""

from __future__ import annotations

import json
import logging
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ..embedding.prompts import document_text, format_instruction
from ..evaluation.retrieval import top_k
from .data import invalid, json_lines

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class MiningOptions:
    """Which ranks negatives come from and how many per row.

    Attributes:
        rank_min: best rank a negative may have (1-based, inclusive).
        rank_max: worst rank a negative may have (inclusive); the search depth.
        negatives: negatives sampled per row (fewer when the range holds fewer non-positives).
        seed: row i samples with `random.Random(f"{seed}:{i}")`, so a resumed run writes the same rows.
        batch_size: queries embedded and searched per step (one progress-bar step).
    """

    rank_min: int = 10
    rank_max: int = 100
    negatives: int = 4
    seed: int = 0
    batch_size: int = 64

    def __post_init__(self) -> None:
        for name in ("rank_min", "rank_max", "negatives", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}.")
        if self.rank_min > self.rank_max:
            raise ValueError(f"rank_min ({self.rank_min}) must not exceed rank_max ({self.rank_max}).")


@dataclass
class MiningResult:
    """What one call did: rows written now, rows already in the output, rows given too few negatives."""

    written: int
    resumed_from: int
    short_rows: int
    output: Path


def _query(lm: Any, query: Any) -> tuple[str, str]:
    """(instruction prefix, text): a plain query gets the model's query instruction, an
    [instruction, text] pair its own instruction."""
    c = lm.config
    if isinstance(query, (list, tuple)):
        return format_instruction(query[0], c.prompt_format, c.prompt_template), query[1]
    return format_instruction(c.query_instruction, c.prompt_format, c.prompt_template), query


def read_mining_rows(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """{query, pos} rows of a JSON lines file (pos: a text or a list); extra keys are kept."""
    rows = []
    for where, row in json_lines(path):
        if not isinstance(row, dict) or "query" not in row or not row.get("pos"):
            raise invalid(where, 'expected a JSON object with "query" and a non-empty "pos".')
        rows.append({**row, "pos": row["pos"] if isinstance(row["pos"], list) else [row["pos"]]})
    return rows


def complete_rows(output: Path) -> int:
    """Complete lines already in `output`; a torn last line (an interrupted write) is cut off."""
    if not output.exists():
        return 0
    data = output.read_bytes()
    keep = data.rfind(b"\n") + 1
    if keep < len(data):
        logger.info("Dropping a torn last line of %s", output)
        with output.open("r+b") as f:
            f.truncate(keep)
    return data[:keep].count(b"\n")


def _corpus_vectors(lm: Any, texts: Sequence[str], output: Path) -> np.ndarray:
    cached = output.with_name(output.name + ".corpus.npy")
    if cached.exists():
        vectors = np.load(cached)
        if vectors.shape[0] == len(texts):
            return vectors
        logger.info(
            "%s holds %d vectors for %d documents; re-embedding", cached, vectors.shape[0], len(texts)
        )
    vectors = np.asarray(lm.encode_documents(list(texts), show_progress_bar=True), dtype=np.float32)
    np.save(cached, vectors)
    return vectors


def sample_negatives(
    ranked: Sequence[int],
    corpus: Sequence[str],
    positives: set[str],
    options: MiningOptions,
    rng: random.Random,
) -> list[int]:
    """Corpus indices sampled from ranks rank_min..rank_max of `ranked` (best first), no positive."""
    window = ranked[options.rank_min - 1 : options.rank_max]
    allowed = [i for i in window if corpus[i].strip() not in positives]
    return rng.sample(allowed, min(options.negatives, len(allowed)))


def mine_hard_negatives(
    lm: Any,
    rows: Sequence[dict[str, Any]],
    corpus: Sequence[Any],
    output: str | os.PathLike[str],
    options: MiningOptions | None = None,
    show_progress: bool = True,
) -> MiningResult:
    """Append `{query, pos, neg}` rows for `rows` to `output`, resuming after the rows already there.

    Args:
        lm: the current model (an `EgtLM`: its query and document embeddings rank the corpus).
        rows: dicts with "query" (a text or [instruction, text]) and "pos" (a list of texts).
        corpus: the documents to mine from (strings or {"title", "text"} dicts).
        output: the JSON lines file written (appended to when it exists).
        options: the rank range and how many negatives (`MiningOptions()`: 4 from ranks 10-100).

    Example:
        >>> mine_hard_negatives(EgtLM(), [{"query": "q", "pos": ["p"]}], corpus, "mined.jsonl")
    """
    options = options or MiningOptions()
    output = Path(output)
    texts = [document_text(d) for d in corpus]
    if len(texts) < options.rank_min:
        raise ValueError(f"The corpus has {len(texts)} documents, fewer than rank_min={options.rank_min}.")
    done = complete_rows(output)
    if done > len(rows):
        raise ValueError(f"{output} already holds {done} rows, more than the {len(rows)} input rows.")
    result = MiningResult(0, done, 0, output)
    if done == len(rows):
        return result
    output.parent.mkdir(parents=True, exist_ok=True)
    vectors = _corpus_vectors(lm, texts, output)
    starts = range(done, len(rows), options.batch_size)
    with output.open("a", encoding="utf-8") as out:
        for start in tqdm(starts, desc="Mining", unit="batch", disable=not show_progress):
            batch = rows[start : start + options.batch_size]
            queries = np.stack(
                [lm.encode(t, instruction=i) for i, t in (_query(lm, r["query"]) for r in batch)]
            )
            ranked = top_k(queries.astype(np.float32), vectors, options.rank_max)
            for offset, (row, hits) in enumerate(zip(batch, ranked, strict=True)):
                positives = {document_text(p).strip() for p in row["pos"]}
                rng = random.Random(f"{options.seed}:{start + offset}")
                negs = sample_negatives([int(h) for h in hits], texts, positives, options, rng)
                result.short_rows += len(negs) < options.negatives
                out.write(json.dumps({**row, "neg": [texts[i] for i in negs]}, ensure_ascii=False) + "\n")
                result.written += 1
            out.flush()
    return result
