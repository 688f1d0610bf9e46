"""Instruction prefixes for embedding: the text placed before what is embedded.

`encode(texts, instruction=...)` takes a finished prefix (as GritLM does); `encode_queries` and
`encode_documents` build one from a task description with `format_instruction`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..config import PROMPT_FORMATS


def format_instruction(task: str, prompt_format: str = "egtlm", template: str | None = None) -> str:
    """Wrap a task description in the model's instruction format.

    Example:
        >>> format_instruction("Retrieve passages")
        '<|user|>\\nRetrieve passages\\n<|embed|>\\n'
        >>> format_instruction("")
        '<|embed|>\\n'
    """
    if prompt_format in ("egtlm", "gritlm"):
        return f"<|user|>\n{task}\n<|embed|>\n" if task else "<|embed|>\n"
    if prompt_format == "e5":
        return f"Instruct: {task}\nQuery: " if task else ""
    if prompt_format == "none":
        return task
    if prompt_format == "custom":
        if not template or "{instruction}" not in template:
            raise ValueError(f"A custom prompt template must contain '{{instruction}}', got {template!r}.")
        return template.format(instruction=task)
    raise ValueError(f"Unknown prompt_format {prompt_format!r}; expected one of {PROMPT_FORMATS}.")


def document_text(doc: Any) -> str:
    """A document as text: strings pass through, {"title", "text"} dicts join as GritLM does."""
    if isinstance(doc, str):
        return doc
    if isinstance(doc, Mapping):
        if "text" not in doc:
            raise ValueError(f"A document dict needs a 'text' key, got keys {sorted(doc)}.")
        title, text = doc.get("title") or "", doc["text"]
        if not isinstance(text, str) or not isinstance(title, str):
            raise TypeError("A document dict's 'title' and 'text' must be strings.")
        return f"{title} {text}".strip() if title else text
    raise TypeError(f"A document must be a str or a {{'title', 'text'}} dict, got {type(doc).__name__}.")
