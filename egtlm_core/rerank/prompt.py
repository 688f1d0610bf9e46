"""The prompts a pointwise reranker reads: a yes/no relevance question, or a query-likelihood one.

`RerankPrompt`: the model reads the query and the document in a chat turn and the reranker looks at
its very next token: the probability it gives the "yes" words against the "no" words is the score.
Several spellings per side ("yes", "Yes") are summed, since an instruct model may capitalise.

`QueryLikelihoodPrompt` (UPR, Sachan et al. 2022): the model reads the document, is asked to write
a question about it, and the score is how likely the actual query is as that question. Small models
that cannot judge relevance well still predict text well, so this is the alternative to try.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

DEFAULT_TEMPLATE = (
    "Query: {query}\n\nDocument: {document}\n\nIs the document relevant to the query? Answer yes or no."
)


@dataclass(frozen=True)
class RerankPrompt:
    """What the reranker asks and which answer tokens it reads.

    Attributes:
        template: the user turn, with `{query}` and `{document}`.
        system: a system message; None keeps the chat template's default (SmolLM2 adds its own).
        answer_prefix: text placed after the assistant header, before the yes/no token.
        yes: spellings whose first token counts as "yes".
        no: spellings whose first token counts as "no".
        chat: render through the tokenizer's chat template (False: the template text as it is).
    """

    template: str = DEFAULT_TEMPLATE
    system: str | None = None
    answer_prefix: str = ""
    yes: tuple[str, ...] = ("yes", "Yes")
    no: tuple[str, ...] = ("no", "No")
    chat: bool = True

    def __post_init__(self) -> None:
        if "{query}" not in self.template or "{document}" not in self.template:
            raise ValueError(f"A rerank template needs {{query}} and {{document}}, got {self.template!r}.")
        if not self.yes or not self.no:
            raise ValueError("A rerank prompt needs at least one 'yes' and one 'no' spelling.")
        object.__setattr__(self, "yes", tuple(self.yes))
        object.__setattr__(self, "no", tuple(self.no))

    def answer_ids(self, tokenizer: Any) -> tuple[list[int], list[int]]:
        """First-token ids of the yes and the no spellings (deduplicated); they must not overlap."""
        yes, no = _first_ids(tokenizer, self.yes), _first_ids(tokenizer, self.no)
        if set(yes) & set(no):
            raise ValueError(f"The yes spellings {self.yes} and no spellings {self.no} share a first token.")
        return yes, no

    def prompt_ids(self, tokenizer: Any, query: str, document: str) -> list[int]:
        """Token ids up to the position whose next-token distribution is read."""
        return _render(tokenizer, self.template.format(query=query, document=document), self)


QUERY_LIKELIHOOD_TEMPLATE = "Passage: {document}\n\nPlease write a question based on this passage."


@dataclass(frozen=True)
class QueryLikelihoodPrompt:
    """Score = the geometric-mean probability of the query's tokens as the model's answer to
    `template` (which holds `{document}` only); `system` and `chat` as in `RerankPrompt`."""

    template: str = QUERY_LIKELIHOOD_TEMPLATE
    system: str | None = None
    answer_prefix: str = ""
    chat: bool = True

    def __post_init__(self) -> None:
        if "{document}" not in self.template or "{query}" in self.template:
            raise ValueError(
                f"A query-likelihood template needs {{document}} and no {{query}}, got {self.template!r}."
            )

    def prompt_ids(self, tokenizer: Any, document: str) -> list[int]:
        """Token ids before the query: the document turn and the assistant header."""
        return _render(tokenizer, self.template.format(document=document), self)


def _render(tokenizer: Any, text: str, prompt: Any) -> list[int]:
    """`text` as a user turn (chat template, generation prompt, answer prefix) or as plain text."""
    if prompt.chat and getattr(tokenizer, "chat_template", None):
        messages = [{"role": "user", "content": text}]
        if prompt.system is not None:
            messages.insert(0, {"role": "system", "content": prompt.system})
        rendered = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return list(tokenizer(rendered + prompt.answer_prefix, add_special_tokens=False)["input_ids"])
    body = (prompt.system + "\n\n" if prompt.system else "") + text + prompt.answer_prefix
    return list(tokenizer(body, add_special_tokens=True)["input_ids"])


def _first_ids(tokenizer: Any, words: Sequence[str]) -> list[int]:
    out: list[int] = []
    for word in words:
        ids = tokenizer(word, add_special_tokens=False)["input_ids"]
        if not ids:
            raise ValueError(f"The answer spelling {word!r} tokenizes to nothing.")
        if ids[0] not in out:
            out.append(int(ids[0]))
    return out
