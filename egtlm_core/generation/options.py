"""`GenerationOptions`: everything a chat or an answer decodes with, checked once, passed as one object.

`EgtLM.chat`, `stream_chat`, `answer` and `stream_answer` build one from their keyword arguments (over
an options object the caller passes); the shared-cache engine and the decoding loop read its fields.
A new option is one field here, read where it is used.
"""

from __future__ import annotations

import dataclasses
import difflib
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

from .chat import check_sampling, check_template_kwargs, generation_config
from .constraints import check_tools, response_schema
from .tools import plan_tools

RECOMPUTE_TOKENS = 32
"""Leading tokens of each spliced document recomputed live by default. A spliced document never
attended to the documents before it; recomputing its first 32 tokens lets its head see them, which
recovers most of what multi-document reuse costs for a few percent of latency (LangChain chain, k = 4,
80 XQuAD questions, shipped adapter: gold span 9/80 spliced as-is, 19/80 with 32, 25/80 full prefill;
docs/shared_cache.md). Exact slots (the first document after its own prompt head) are never
recomputed. 0 splices every stored token (the fastest)."""


def check_recompute_tokens(recompute_tokens: Any) -> None:
    """`recompute_tokens` is how many leading tokens of each spliced document are recomputed."""
    n = recompute_tokens
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"recompute_tokens must be an integer ≥ 0, got {n!r}.")


@dataclass(frozen=True)
class GenerationOptions:
    """Everything `EgtLM.chat` and `stream_chat` take besides the messages, checked once here.

    Build one and pass it (`m.chat(messages, options)`, keyword arguments override its fields), or
    pass the fields as keyword arguments. `chat_template_kwargs` go to the tokenizer's chat template;
    `cancel` is a `threading.Event` that, once set from any thread, ends the generation before its
    next token (finish_reason "cancelled"); `tools`, `tool_choice` and `response_format` are
    described in `EgtLM.chat`. A new option is one field here, read where it is used.

    Example:
        >>> opts = GenerationOptions(max_new_tokens=64, stop=["\n\n"])
        >>> m.chat("Name a colour.", opts).text
    """

    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    stop: Sequence[str] | None = None
    reuse_cache: bool = False
    recompute_tokens: int = RECOMPUTE_TOKENS
    logits_processor: Any = None
    chat_template_kwargs: Mapping[str, Any] | None = None
    cancel: threading.Event | None = None
    tools: Sequence[Mapping[str, Any]] | None = None
    tool_choice: Any = None
    response_format: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        check_sampling(self.max_new_tokens, self.temperature, self.top_p)
        if isinstance(self.stop, str):  # one stop string, not its characters
            object.__setattr__(self, "stop", (self.stop,))
        check_recompute_tokens(self.recompute_tokens)
        object.__setattr__(self, "chat_template_kwargs", check_template_kwargs(self.chat_template_kwargs))
        object.__setattr__(self, "tools", check_tools(self.tools))
        plan_tools(self.tools or (), self.tool_choice)  # a bad tool_choice fails here, with the valid ones
        response_schema(self.response_format)
        if self.cancel is not None and not hasattr(self.cancel, "is_set"):
            raise TypeError(f"cancel must be a threading.Event, got {type(self.cancel).__name__}.")

    def generation_config(self, tokenizer: Any, model: Any) -> Any:
        """The transformers `GenerationConfig` of these options for `model` (a fresh one per call)."""
        return generation_config(tokenizer, model, self.max_new_tokens, self.temperature, self.top_p)

    def decoding(self) -> dict[str, Any]:
        """What the decoding loop (`stream_generate`, `generate_text`) takes from these options."""
        return {"stop": self.stop or (), "logits_processor": self.logits_processor, "cancel": self.cancel}

    @classmethod
    def from_options(
        cls, options: Mapping[str, Any], base: GenerationOptions | None = None
    ) -> GenerationOptions:
        """Options by name (over `base`'s, if given); unknown names are refused with the valid ones
        (no silent pass-through)."""
        if base is not None and not isinstance(base, GenerationOptions):
            raise TypeError(f"options must be a GenerationOptions, got {type(base).__name__}.")
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(options) - set(names))
        if unknown:
            hints = [f"{u!r} -> {m[0]!r}" for u in unknown if (m := difflib.get_close_matches(u, names, n=1))]
            meant = f" (did you mean {', '.join(hints)}?)" if hints else ""
            raise TypeError(
                f"Unknown chat option(s) {unknown}{meant}; the options are {names}. "
                "Chat-template arguments go in chat_template_kwargs={...}."
            )
        return cls(**options) if base is None else dataclasses.replace(base, **options)
