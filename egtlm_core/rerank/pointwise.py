"""Pointwise reranking with the generator: score(query, document) = P("yes") against P("no").

The same loaded weights that embed and answer read one relevance prompt per document
(`prompt.RerankPrompt`) and the reranker takes the next-token distribution at its end:

    score = sum_yes p(t) / (sum_yes p(t) + sum_no p(t)) = sigmoid(logsumexp(yes) - logsumexp(no))

With a `QueryLikelihoodPrompt` the score is instead exp(mean_j log p(query_j | document, query_<j)):
the query is the answer the model is scored on, so its tokens are the last of every row and only
those positions go through the LM head.

Prompts are scored longest first in left-padded batches, with positions that count real tokens
only, so a document scores the same alone or in any batch. Only the last position goes through the
LM head (`logits_to_keep=1`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..embedding.answer_states import left_pad
from ..embedding.prompts import document_text
from ..modeling.attention import position_ids_for
from .prompt import QueryLikelihoodPrompt, RerankPrompt


@dataclass(frozen=True)
class RankedDocument:
    """One reranked document: its position in the input, its relevance score in [0, 1], itself."""

    index: int
    score: float
    document: Any


class PointwiseReranker:
    """Score documents for a query by asking the causal LM whether each is relevant.

    Args:
        model: a causal LM (has an LM head), e.g. `EgtLM(...).model`.
        tokenizer: its tokenizer.
        prompt: a `QueryLikelihoodPrompt` (the default: chosen on SciFact *train*, where it lifted
            dense nDCG@10 while the yes/no prompt lowered it; docs/benchmarks/rerank.md) or a
            yes/no `RerankPrompt`.
        batch_size: prompts per forward.
        max_document_tokens: tokens of each document kept (the rest is cut before prompting).

    Example:
        >>> reranker = PointwiseReranker(lm.model, lm.tokenizer)
        >>> reranker.rerank("capital of France?", ["Berlin is in Germany.", "Paris is in France."])[0].index
        1
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        prompt: RerankPrompt | QueryLikelihoodPrompt | None = None,
        batch_size: int = 8,
        max_document_tokens: int = 384,
    ) -> None:
        for name, value in (("batch_size", batch_size), ("max_document_tokens", max_document_tokens)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}.")
        self.model, self.tokenizer = model, tokenizer
        self.prompt = prompt or QueryLikelihoodPrompt()
        self.batch_size, self.max_document_tokens = batch_size, max_document_tokens
        if isinstance(self.prompt, RerankPrompt):
            yes, no = self.prompt.answer_ids(tokenizer)
            self._yes, self._no = torch.tensor(yes), torch.tensor(no)

    def _prompts(self, query: str, documents: Sequence[Any]) -> list[list[int]]:
        if not isinstance(query, str) or not query.strip():
            raise ValueError(f"The query must be a non-empty string, got {query!r:.60}.")
        texts = [document_text(d) for d in documents]
        pieces = self.tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []
        cut = [
            self.tokenizer.decode(ids[: self.max_document_tokens])
            if len(ids) > self.max_document_tokens
            else t
            for t, ids in zip(texts, pieces, strict=True)
        ]
        if isinstance(self.prompt, QueryLikelihoodPrompt):
            query_ids = self._query_ids(query)
            return [self.prompt.prompt_ids(self.tokenizer, t) + query_ids for t in cut]
        return [self.prompt.prompt_ids(self.tokenizer, query, t) for t in cut]

    def _query_ids(self, query: str) -> list[int]:
        return list(self.tokenizer(query.strip(), add_special_tokens=False)["input_ids"])

    def _logits(self, prompts: Sequence[Sequence[int]], keep: int) -> torch.Tensor:
        """Float32 log-probabilities at the last `keep` positions of each left-padded prompt."""
        tok = self.tokenizer
        pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        ids, mask = left_pad(prompts, int(pad_id), self.model.device)
        out = self.model(
            input_ids=ids, attention_mask=mask, position_ids=position_ids_for(mask), logits_to_keep=keep
        )
        return torch.log_softmax(out.logits[:, -keep:].float(), dim=-1)

    @torch.inference_mode()
    def _score_batch(self, prompts: Sequence[Sequence[int]], query: str) -> torch.Tensor:
        if isinstance(self.prompt, QueryLikelihoodPrompt):
            target = torch.tensor(self._query_ids(query), device=self.model.device)
            # positions -n-1 .. -2 predict the n query tokens
            logp = self._logits(prompts, len(target) + 1)[:, :-1]
            picked = logp.gather(-1, target.expand(len(prompts), -1).unsqueeze(-1)).squeeze(-1)
            return picked.mean(dim=-1).exp()
        logp = self._logits(prompts, 1)[:, -1]
        yes = torch.logsumexp(logp[:, self._yes.to(logp.device)], dim=-1)
        no = torch.logsumexp(logp[:, self._no.to(logp.device)], dim=-1)
        return torch.sigmoid(yes - no)

    def score(self, query: str, documents: Sequence[Any]) -> np.ndarray:
        """Relevance of each document (a string or {"title", "text"}) to `query`, float64 in [0, 1]."""
        prompts = self._prompts(query, list(documents))
        scores = np.zeros(len(prompts), dtype=np.float64)
        order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            scores[idx] = self._score_batch([prompts[i] for i in idx], query).cpu().double().numpy()
        return scores

    def rerank(self, query: str, documents: Sequence[Any], top_n: int | None = None) -> list[RankedDocument]:
        """Documents best first (ties keep the input order); `top_n` keeps that many."""
        if top_n is not None and (not isinstance(top_n, int) or isinstance(top_n, bool) or top_n < 1):
            raise ValueError(f"top_n must be a positive integer or None, got {top_n!r}.")
        documents = list(documents)
        scores = self.score(query, documents)
        order = np.argsort(-scores, kind="stable")[:top_n]
        return [RankedDocument(int(i), float(scores[i]), documents[i]) for i in order]
