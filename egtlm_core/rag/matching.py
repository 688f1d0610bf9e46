"""Find known documents in a finished prompt (rendered by a framework's chain) and plan around them.

A chain hands the chat model one string; the documents a retriever returned are somewhere inside
it. This module turns that string into a `SegmentPlan` whose document segments can come from the
store, so the chain itself does not change.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .segment_plan import Segment, SegmentPlan, _ids


def _find_documents(prompt: str, documents: Sequence[str]) -> list[tuple[int, int, str]]:
    """Non-overlapping (start, end, text) spans of known documents in the prompt, in prompt order.

    Longer documents are placed first so a document that contains another wins the span.
    """
    spans: list[tuple[int, int, str]] = []
    for doc in sorted({d for d in documents if d and d.strip()}, key=len, reverse=True):
        start = prompt.find(doc)
        while start != -1:
            end = start + len(doc)
            if all(end <= s or start >= e for s, e, _ in spans):
                spans.append((start, end, doc))
                break
            start = prompt.find(doc, start + 1)
    return sorted(spans)


def plan_from_prompt(tokenizer: Any, prompt: str, documents: Sequence[str]) -> SegmentPlan:
    """Plan a finished prompt (e.g. rendered by a framework's chain) around the documents it contains.

    The text before the first document becomes the cached prefix, each found document a cached
    segment, everything else live. A prompt with no known document is one live segment, and a
    prompt that ends in a document gets the document as live tail (generation needs a live end).
    """
    spans = _find_documents(prompt, documents)
    if spans and spans[-1][1] == len(prompt):
        spans = spans[:-1]
    if not spans:
        return SegmentPlan([Segment(_ids(tokenizer, prompt))])
    segments: list[Segment] = []
    cursor = 0
    for start, end, doc in spans:
        gap = prompt[cursor:start]
        if gap:
            segments.append(
                Segment(_ids(tokenizer, gap), text=gap, is_prefix=True)
                if not segments
                else Segment(_ids(tokenizer, gap))
            )
        segments.append(Segment(_ids(tokenizer, doc), text=doc))
        cursor = end
    segments.append(Segment(_ids(tokenizer, prompt[cursor:])))
    return SegmentPlan([s for s in segments if s.token_ids])
