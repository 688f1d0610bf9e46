"""Settings of an `EgtLM`, validated where they enter.

GritLM's constructor names (`pooling_method`, `normalized`, `attn`, `embed_eos`) map onto these
fields so GritLM code moves over unchanged; see `EgtLMConfig.from_kwargs`.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, ClassVar, Literal

Mode = Literal["unified", "embedding", "generative"]
Pooling = Literal["mean", "weightedmean", "last", "cls"]
Attention = Literal["bidirectional", "causal"]
PromptFormat = Literal["egtlm", "gritlm", "e5", "none", "custom"]
CacheCapture = Literal["auto", "reuse", "causal"]
DocumentContext = Literal["instruction", "rag"]

MODES: tuple[str, ...] = ("unified", "embedding", "generative")
POOLINGS: tuple[str, ...] = ("mean", "weightedmean", "last", "cls")
ATTENTIONS: tuple[str, ...] = ("bidirectional", "causal")
PROMPT_FORMATS: tuple[str, ...] = ("egtlm", "gritlm", "e5", "none", "custom")
CACHE_CAPTURES: tuple[str, ...] = ("auto", "reuse", "causal")
DOCUMENT_CONTEXTS: tuple[str, ...] = ("instruction", "rag")

# GritLM / sentence-transformers spellings accepted as aliases.
_POOLING_ALIASES = {
    "lasttoken": "last",
    "last_token": "last",
    "cls_token": "cls",
    "weighted_mean": "weightedmean",
}
# GritLM's attn strings: first pair = embedding attention, second = generation (always causal here).
_ATTN_ALIASES = {"bbcc": "bidirectional", "cccc": "causal", "bb": "bidirectional", "cc": "causal"}


def _choose(name: str, value: str, valid: tuple[str, ...]) -> str:
    if value not in valid:
        raise ValueError(f"Unknown {name} {value!r}; expected one of {valid}.")
    return value


@dataclass
class EgtLMConfig:
    """How an `EgtLM` embeds and generates.

    The defaults (causal attention, weighted-mean pooling) suit decoders that were not trained for
    bidirectional embedding, like the packaged SmolLM2: on STS-B dev (400 pairs) they score Spearman
    0.562 against 0.488 for causal mean and 0.086 for bidirectional mean, and a causal pass gives the
    exact generation cache for free. GRIT-trained models want GritLM's settings:
    `attn="bbcc", pooling_method="mean"`.

    Attributes:
        mode: "unified" loads the LM with its head (embed + generate), "embedding" loads the bare
            transformer (no LM head, encode only), "generative" refuses `encode`.
        pooling: how token states become one vector; "last" is e5-mistral's last real token.
        attention: attention during the embedding pass; generation is always causal.
        normalize: L2-normalise embeddings.
        embed_eos: a string appended to every embedded text. None (default) appends the tokenizer's
            EOS only where the prompt format expects it: "e5" with "last" pooling (e5-mistral pools
            the EOS state). GritLM's own default is embed_eos="" (nothing), so GritLM settings
            (`pooling_method="lasttoken", attn="cccc"`) pool the last text token, as GritLM does;
            pass embed_eos="</s>" (or the model's EOS) to append it; "" never appends anything.
        prompt_format: how an instruction is wrapped (`prompts.py`).
        prompt_template: the template for prompt_format="custom"; must contain "{instruction}".
        query_instruction: task text applied by `encode_queries`.
        document_instruction: task text applied by `encode_documents` (none by default).
        max_length: token limit per text; longer texts are truncated with a warning.
        batch_size: texts per forward pass.
        max_batch_tokens: padded tokens per forward pass (texts are batched longest-first within
            both limits). None: 1024 on CPU, where big batches of long texts are slower than small
            ones (XQuAD paragraphs: 2.5x slower at 32 per batch than at 2), no limit on GPU.
        cache_capture: where document KV states come from when `get_cache=True` and attention is
            bidirectional: "reuse" the bidirectional states (GRIT-trained models only), "causal" run an
            extra causal pass (exact for any model), "auto" = causal.
        document_context: what a document is embedded after. "instruction": the document
            instruction (`encode_documents`' classic mode; indexing runs an embedding pass and a
            capture pass). "rag": the RAG prompt head documents are captured after, each document
            tokenized on its own as the capture tokenizes it, so its vector is the pooled hidden
            states of the very causal pass that captures its KV states and indexing is one forward
            (needs causal attention and no appended EOS). `max_length` then counts document tokens.
    """

    # The fields that decide what vector a text gets: the one list every adapter saves, rebuilds and
    # compares (Chroma's persisted config, the sentence-transformers module's JSON, LangChain and
    # LlamaIndex settings); an adapter that keeps one elsewhere drops it from this list by name.
    #   pooling, attention, normalize: how the hidden states become the vector;
    #   embed_eos: tokens appended to every text (and, with None, prompt_format decides it too);
    #   prompt_format, prompt_template, query_instruction, document_instruction: the instruction
    #     text queries and documents are embedded after;
    #   document_context: documents after their instruction or after the RAG prompt head;
    #   max_length: truncation, so the vector of every text longer than it.
    # Not in it: mode (the same body weights embed in "unified" and "embedding"), batch_size and
    # max_batch_tokens (batching only; padding is masked out), cache_capture (where KV caches come
    # from, never the vectors).
    VECTOR_FIELDS: ClassVar[tuple[str, ...]] = (
        "pooling",
        "attention",
        "normalize",
        "embed_eos",
        "prompt_format",
        "prompt_template",
        "query_instruction",
        "document_instruction",
        "document_context",
        "max_length",
    )

    mode: Mode = "unified"
    pooling: Pooling = "weightedmean"
    attention: Attention = "causal"
    normalize: bool = True
    embed_eos: str | None = None
    prompt_format: PromptFormat = "egtlm"
    prompt_template: str | None = None
    query_instruction: str = "Given a question, retrieve passages that answer the question"
    document_instruction: str = ""
    max_length: int = 512
    batch_size: int = 32
    max_batch_tokens: int | None = None
    cache_capture: CacheCapture = "auto"
    document_context: DocumentContext = "instruction"

    def __post_init__(self) -> None:
        self.pooling = _POOLING_ALIASES.get(self.pooling, self.pooling)  # type: ignore[assignment]
        self.attention = _ATTN_ALIASES.get(self.attention, self.attention)  # type: ignore[assignment]
        _choose("mode", self.mode, MODES)
        _choose("pooling", self.pooling, POOLINGS)
        _choose("attention", self.attention, ATTENTIONS)
        _choose("prompt_format", self.prompt_format, PROMPT_FORMATS)
        _choose("cache_capture", self.cache_capture, CACHE_CAPTURES)
        _choose("document_context", self.document_context, DOCUMENT_CONTEXTS)
        rag_context = self.document_context == "rag"
        if rag_context and (self.attention != "causal" or self.appends_eos or self.embed_eos):
            raise ValueError(
                "document_context='rag' embeds documents in their causal capture pass, so it needs "
                "attention='causal' and no embed_eos; use document_context='instruction' otherwise."
            )
        if self.prompt_format == "custom":
            if not self.prompt_template or "{instruction}" not in self.prompt_template:
                raise ValueError(
                    "prompt_format='custom' needs prompt_template containing '{instruction}', "
                    f"got {self.prompt_template!r}."
                )
        elif self.prompt_template is not None:
            raise ValueError(
                f"prompt_template is only used with prompt_format='custom', not {self.prompt_format!r}."
            )
        if not isinstance(self.max_length, int) or self.max_length < 2:
            raise ValueError(f"max_length must be an integer ≥ 2, got {self.max_length!r}.")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {self.batch_size!r}.")
        if self.max_batch_tokens is not None and (
            isinstance(self.max_batch_tokens, bool)
            or not isinstance(self.max_batch_tokens, int)
            or self.max_batch_tokens < 1
        ):
            raise ValueError(
                f"max_batch_tokens must be a positive integer or None, got {self.max_batch_tokens!r}."
            )

    @property
    def appends_eos(self) -> bool:
        """Whether embed_eos=None appends the tokenizer's EOS: only for e5 prompts with last pooling."""
        return self.embed_eos is None and self.prompt_format == "e5" and self.pooling == "last"

    @property
    def resolved_capture(self) -> Literal["reuse", "causal"]:
        """The capture actually used: a causal embedding pass always gives exact generation states."""
        if self.attention == "causal" or self.cache_capture == "reuse":
            return "reuse"
        return "causal"

    @classmethod
    def from_kwargs(cls, kwargs: dict[str, Any]) -> tuple[EgtLMConfig, dict[str, Any]]:
        """Split constructor kwargs into config fields (GritLM names mapped) and the rest."""
        kwargs = dict(kwargs)
        renames = {"pooling_method": "pooling", "normalized": "normalize", "attn": "attention"}
        for old, new in renames.items():
            if old in kwargs:
                if new in kwargs:
                    raise ValueError(f"Pass either {old!r} or {new!r}, not both.")
                kwargs[new] = kwargs.pop(old)
        names = {f.name for f in fields(cls)}
        cfg = cls(**{k: kwargs.pop(k) for k in list(kwargs) if k in names})
        return cfg, kwargs
