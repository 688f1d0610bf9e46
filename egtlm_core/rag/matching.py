"""Find known documents in a finished prompt (rendered by a framework's chain) and plan around them.

A chain hands the chat model one string; the documents a retriever handed out are somewhere inside
it. The prompt is tokenized **once**, with offsets, and a document is accepted only where its span
starts and ends on token boundaries of that tokenization and the tokens there equal the document's
own tokens (what its stored states were computed from). The plan is then cut from those token ids,
so reuse and a full prefill of the same prompt see exactly the same ids. Short texts (fewer than
`MIN_DOCUMENT_TOKENS` tokens) are never matched: a known text such as "cat" or "user" would otherwise
cut "concatenate" or a role header into pieces.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .segment_plan import Segment, SegmentPlan

MIN_DOCUMENT_TOKENS = 16


@dataclass(frozen=True)
class KnownDocument:
    """A document a prompt may contain: its text and its own token ids (what its states hold)."""

    text: str
    token_ids: tuple[int, ...]


@dataclass(frozen=True)
class _Span:
    first: int  # token index where the document starts in the prompt
    end: int  # token index after its last token
    doc: KnownDocument


def _boundaries(offsets: list[tuple[int, int]]) -> tuple[dict[int, int], dict[int, int]]:
    """char offset -> token index for token starts, and char offset -> token index after, for ends.

    A character split over several byte-level tokens gives those tokens the same offsets; the first
    such token counts as the start and the last as the end, so a span never cuts inside the character.
    """
    starts: dict[int, int] = {}
    ends: dict[int, int] = {}
    for i, (lo, hi) in enumerate(offsets):
        if hi > lo:
            starts.setdefault(lo, i)
            ends[hi] = i + 1
    return starts, ends


def find_documents(
    prompt_ids: list[int],
    offsets: list[tuple[int, int]],
    prompt: str,
    documents: Iterable[KnownDocument],
    min_tokens: int = MIN_DOCUMENT_TOKENS,
) -> list[_Span]:
    """Non-overlapping token spans of known documents in the prompt, in prompt order.

    Longer documents are placed first, so a document that contains another wins the span; every
    occurrence of a document is matched (a chain may repeat one).
    """
    starts, ends = _boundaries(offsets)
    taken = [False] * len(prompt_ids)
    spans: list[_Span] = []
    candidates = {d.text: d for d in documents if len(d.token_ids) >= min_tokens and d.text.strip()}
    for doc in sorted(candidates.values(), key=lambda d: len(d.text), reverse=True):
        at = prompt.find(doc.text)
        while at != -1:
            first, end = starts.get(at), ends.get(at + len(doc.text))
            if (
                first is not None
                and end is not None
                and tuple(prompt_ids[first:end]) == doc.token_ids
                and not any(taken[first:end])
            ):
                taken[first:end] = [True] * (end - first)
                spans.append(_Span(first, end, doc))
            at = prompt.find(doc.text, at + 1)
    return sorted(spans, key=lambda s: s.first)


def tokenize_with_offsets(tokenizer: Any, prompt: str) -> tuple[list[int], list[tuple[int, int]]]:
    """The prompt's ids exactly as a full prefill tokenizes it (no special tokens added), with offsets."""
    encoded = tokenizer(prompt, add_special_tokens=False, return_offsets_mapping=True)
    return list(encoded["input_ids"]), [tuple(o) for o in encoded["offset_mapping"]]


def plan_from_prompt(
    tokenizer: Any,
    prompt: str,
    documents: Iterable[KnownDocument],
    min_tokens: int = MIN_DOCUMENT_TOKENS,
) -> SegmentPlan:
    """Plan a finished prompt around the known documents it contains.

    The tokens before the first document become the cached prefix, each found document a cached
    segment, everything else live. A prompt with no known document is one live segment, and a
    document at the very end stays live (generation needs a live end). `plan.token_ids` always equals
    the prompt's own tokenization.
    """
    ids, offsets = tokenize_with_offsets(tokenizer, prompt)
    spans = find_documents(ids, offsets, prompt, documents, min_tokens)
    if spans and spans[-1].end == len(ids):
        spans = spans[:-1]
    if not spans:
        return SegmentPlan([Segment(tuple(ids))])
    segments: list[Segment] = []
    cursor = 0
    for span in spans:
        if span.first > cursor:
            gap = tuple(ids[cursor : span.first])
            if segments:
                segments.append(Segment(gap))
            else:  # the head: its text is what a retriever registered as its capture prefix
                segments.append(Segment(gap, text=prompt[: offsets[span.first][0]], is_prefix=True))
        segments.append(Segment(span.doc.token_ids, text=span.doc.text))
        cursor = span.end
    segments.append(Segment(tuple(ids[cursor:])))
    return SegmentPlan(segments)
