"""A prompt as a sequence of segments: live ones are prefilled, cached ones come from the store.

One plan shape serves every caller: `EgtLM.answer` lays out system prompt, documents and question
with `rag_layout`; framework adapters that receive a finished prompt find the documents in it with
`plan_from_prompt`. The plan is built from token ids, never by re-tokenizing the joined text, so the
reuse path and the full-prefill baseline see exactly the same tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..generation.chat import chat_input_ids

DEFAULT_SYSTEM = "Answer the question using the documents. Be brief."
# The user message around the documents; the marker is replaced by the document segments.
_DOCS_MARKER = "\u0000EGTLM_DOCS\u0000"
_QUESTION_MARKER = "\u0000EGTLM_QUESTION\u0000"
DEFAULT_USER_TEMPLATE = f"Documents:\n{_DOCS_MARKER}\n\nQuestion: {_QUESTION_MARKER}"
DOC_SEPARATOR = "\n\n"


@dataclass(frozen=True)
class Segment:
    """A run of prompt tokens. `text` is set for segments whose states may come from the store."""

    token_ids: tuple[int, ...]
    text: str | None = None
    is_prefix: bool = False  # the fixed prefix documents are captured after (exact at position 0)

    @property
    def cached(self) -> bool:
        return self.text is not None


@dataclass
class SegmentPlan:
    """Segments in prompt order; the last one (the question) is live, prefilled in the same forward
    as the other live segments, which yields the first generated token (`KVReuser.prefill`)."""

    segments: list[Segment] = field(default_factory=list)

    @property
    def token_ids(self) -> list[int]:
        return [t for s in self.segments for t in s.token_ids]

    @property
    def prefix(self) -> Segment | None:
        return self.segments[0] if self.segments and self.segments[0].is_prefix else None

    @property
    def documents(self) -> list[Segment]:
        return [s for s in self.segments if s.cached and not s.is_prefix]

    def __post_init__(self) -> None:
        if self.segments and self.segments[-1].cached:
            raise ValueError("A segment plan must end with a live segment (the question) for generation.")


def _ids(tokenizer: Any, text: str) -> tuple[int, ...]:
    return tuple(tokenizer(text, add_special_tokens=False)["input_ids"])


def _template_parts(tokenizer: Any, system: str | None, user_template: str) -> tuple[str, str, str]:
    """Render the chat template once with markers and split it: (head, between, tail) strings."""
    messages = [{"role": "user", "content": user_template}]
    if system:
        messages.insert(0, {"role": "system", "content": system})
    rendered = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    head, rest = rendered.split(_DOCS_MARKER)
    between, tail = rest.split(_QUESTION_MARKER)
    return head, between, tail


def rag_layout(
    tokenizer: Any,
    question: str,
    documents: Sequence[str],
    system: str | None = DEFAULT_SYSTEM,
    user_template: str = DEFAULT_USER_TEMPLATE,
) -> SegmentPlan:
    """The default RAG prompt: [chat header + "Documents:"] doc1 "\\n\\n" doc2 ... [question + tail].

    The head is the fixed prefix every document is captured after, so the first document slot is
    exact; documents in later slots are re-rotated and never saw the documents before them.
    """
    if _DOCS_MARKER not in user_template or _QUESTION_MARKER not in user_template:
        raise ValueError(
            "user_template must contain the documents and question markers of DEFAULT_USER_TEMPLATE."
        )
    head, between, tail = _template_parts(tokenizer, system, user_template)
    segments = [Segment(_ids(tokenizer, head), text=head, is_prefix=True)]
    separator = _ids(tokenizer, DOC_SEPARATOR)
    for i, doc in enumerate(documents):
        if i:
            segments.append(Segment(separator))
        segments.append(Segment(_ids(tokenizer, doc), text=doc))
    segments.append(Segment(_ids(tokenizer, between + question + tail)))
    return SegmentPlan(segments)


def plain_prompt_ids(tokenizer: Any, question: str, system: str | None = DEFAULT_SYSTEM) -> list[int]:
    """The no-documents prompt (the floor in quality benchmarks)."""
    messages = [{"role": "user", "content": question}]
    if system:
        messages.insert(0, {"role": "system", "content": system})
    return chat_input_ids(tokenizer, messages)
