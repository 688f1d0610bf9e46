"""`EgtLM`: one decoder model that embeds and generates, sharing its weights process-wide."""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from .config import EgtLMConfig
from .embedding.answer_states import encode_answers
from .embedding.encoding import (
    EmbeddingPass,
    TokenizedText,
    tokenize_after_prefix,
    tokenize_for_embedding,
    warn_truncated,
)
from .embedding.inputs import check_texts
from .embedding.prompts import document_text, format_instruction
from .generation.chat import (
    ChatResult,
    ChatStream,
    chat_input_ids,
    check_messages,
    generate_text,
    stream_generate,
)
from .generation.constraints import OutputConstraint
from .generation.options import GenerationOptions
from .loading.devices import resolve_device, resolve_dtype
from .loading.registry import LoadedModel, get_model
from .loading.sources import ModelSource, resolve_source, saved_settings
from .modeling.attention import check_maskable
from .modeling.kernels import attention_kernel as kernel_of
from .rag.document_cache import DocumentCache
from .rag.engine import SharedCacheRAG
from .rag.index import DocumentIndex, ScoredDocument
from .rerank import PointwiseReranker, RankedDocument

logger = logging.getLogger(__name__)


ANSWER_DEFAULTS = GenerationOptions(max_new_tokens=128, reuse_cache=True)  # answer()'s, over chat()'s

# Padded tokens per embedding forward on CPU: long texts run faster in small batches there
# (XQuAD paragraphs, bf16, 1 thread: 4.0 s at 2 per batch vs 10.3 s at 32; STS-B sentences are
# fastest at 32-64 per batch, which this still allows).
CPU_BATCH_TOKENS = 1024

# Arguments GritLM / MTEB callers pass to encode that have no effect here (numpy is the default output).
_ACCEPTED_IGNORED = {"convert_to_numpy", "recast", "add_special_tokens", "task_name"}
# `encode(prompt_name=...)`, sentence-transformers' habit: the role whose configured side embeds the texts.
PROMPT_NAMES = ("query", "document")


class EgtLM:
    """Embed and generate with one decoder model.

    Example:
        >>> m = EgtLM()  # the packaged SmolLM2-135M-Instruct, offline
        >>> m.encode(["a cat", "a dog"]).shape
        (2, 576)
        >>> m.chat([{"role": "user", "content": "What is the capital of France?"}]).text

    Args:
        model_name_or_path: a local directory, a `.gguf` file, a PEFT adapter directory, a hub id, or
            None for the packaged default model.
        mode: "unified" (embed + generate), "embedding" (no LM head), "generative" (no encode).
        torch_dtype: "auto" (bf16 on CUDA; measured on CPU, see `devices.py`), a name or a torch dtype.
        device: "auto", "cpu", "cuda", ...
        attn_implementation: passed to transformers ("sdpa", "eager"); embedding needs a kernel that
            takes a custom mask.
        base_model: the base model for a PEFT adapter whose config names one you do not have.
        cache_store: where `index`/`answer` keep document KV states (an `egtlm_core.cache` tier);
            default: 1 GiB of RAM over a disk tier in the user cache dir.
        document_index: the index `index`/`search`/`answer` use (default: a new in-process one); a
            `SharedDocumentIndex` shares it with other processes (server replicas) through Redis.
        weights: "native" (default), or "int8": every linear layer weight-only int8 with one scale
            per row, for faster CPU decoding where torch's int8 kernel is fast (opt-in; measured per
            CPU in docs/benchmarks/decode_speed.md; CPU only). Vectors and states differ slightly
            from native ones and never share cache entries with them.
        share_weights: True (default) shares the weights with every EgtLM of the same source, dtype
            and device in the process; False loads a private copy, for code that changes them in
            place (`egtlm_core.training` does).
        **kwargs: `EgtLMConfig` fields (pooling, attention, normalize, embed_eos, prompt_format,
            query_instruction, ...) or their GritLM names (pooling_method, normalized, attn).
    """

    def __init__(
        self,
        model_name_or_path: str | os.PathLike | None = None,
        mode: str = "unified",
        *,
        torch_dtype: str | torch.dtype | None = "auto",
        dtype: str | torch.dtype | None = None,
        device: str | torch.device | None = "auto",
        attn_implementation: str | None = None,
        trust_remote_code: bool = False,
        base_model: str | None = None,
        padding_side: str = "right",
        cache_store: Any = None,
        document_index: DocumentIndex | None = None,
        share_weights: bool = True,
        weights: str = "native",
        **kwargs: Any,
    ) -> None:
        self.source: ModelSource = resolve_source(model_name_or_path, base=base_model)
        saved = saved_settings(self.source)  # what a trained model was trained to embed with
        self.config, unknown = EgtLMConfig.from_kwargs({**saved, "mode": mode, **kwargs})
        if unknown:
            raise TypeError(
                f"EgtLM got unknown arguments {sorted(unknown)}; see EgtLMConfig for the settings."
            )
        if padding_side not in ("left", "right"):
            raise ValueError(f"Unknown padding_side {padding_side!r}; expected 'left' or 'right'.")
        self.padding_side = padding_side
        self._cache_store = cache_store
        self._document_index = document_index
        self._engine: SharedCacheRAG | None = None  # internal; `document_cache` is the public face
        self._document_cache: DocumentCache | None = None
        self._rag_lock = threading.Lock()
        resolved_device = resolve_device(device)
        resolved_dtype = resolve_dtype(dtype if dtype is not None else torch_dtype, resolved_device)
        if self.config.mode != "generative":
            check_maskable(attn_implementation)
        self._loaded: LoadedModel = get_model(
            self.source,
            with_lm_head=self.config.mode != "embedding",
            dtype=resolved_dtype,
            device=resolved_device,
            attn_implementation=attn_implementation,
            trust_remote_code=trust_remote_code,
            share=share_weights,
            weights=weights,
        )

    # --- what the seed and GritLM code reach for -------------------------------------------------
    @property
    def model(self) -> Any:
        """The HF model: the causal LM (has `generate`), or the bare transformer in embedding mode."""
        return self._loaded.body if self.config.mode == "embedding" else self._loaded.model

    @property
    def tokenizer(self) -> Any:
        return self._loaded.tokenizer

    @property
    def device(self) -> torch.device:
        return self._loaded.device

    @property
    def dtype(self) -> torch.dtype:
        return self._loaded.dtype

    @property
    def embedding_dim(self) -> int:
        return int(self._loaded.body.config.hidden_size)

    @property
    def weights(self) -> str:
        """ "native", or "int8" for weight-only int8 linears (`EgtLM(weights="int8")`)."""
        return self._loaded.weights

    @property
    def attention_kernel(self) -> str:
        """The attention implementation the model runs (e.g. "sdpa", "eager", "egtlm_sdpa").

        Part of every KV cache key (kernels round differently), and what a benchmark page names.
        """
        return kernel_of(self._loaded.body)

    @property
    def max_batch_tokens(self) -> int | None:
        """Padded tokens per `encode` forward: the configured `max_batch_tokens`, else 1024 on CPU
        (long padded batches cost more than they save there) and no limit on accelerators."""
        if self.config.max_batch_tokens is not None:
            return self.config.max_batch_tokens
        return CPU_BATCH_TOKENS if self.device.type == "cpu" else None

    def __repr__(self) -> str:
        c = self.config
        return (
            f"EgtLM({self.source.cache_id()!r}, mode={c.mode!r}, pooling={c.pooling!r}, "
            f"attention={c.attention!r}, dtype={self.dtype}, device={self.device}"
            + ("" if self.weights == "native" else f", weights={self.weights!r}")
            + ")"
        )

    # --- embedding --------------------------------------------------------------------------------
    def _suffix_ids(self) -> list[int]:
        """Token ids appended to every embedded text: `embed_eos` (see `EgtLMConfig.appends_eos`)."""
        eos = self.config.embed_eos
        if eos is None:
            eos_id = self.tokenizer.eos_token_id
            return [eos_id] if self.config.appends_eos and eos_id is not None else []
        return list(self.tokenizer(eos, add_special_tokens=False)["input_ids"]) if eos else []

    def embedding_inputs(
        self, texts: Sequence[str], instruction: str = "", max_length: int | None = None
    ) -> list[TokenizedText]:
        """`encode`'s tokenization (instruction boundary, truncation, EOS suffix), for code that runs
        its own batches (training, the sentence-transformers module)."""
        limit = self.config.max_length if max_length is None else max_length
        return tokenize_for_embedding(self.tokenizer, list(texts), instruction, limit, self._suffix_ids())

    def embedding_pass(self) -> EmbeddingPass:
        """The model and pooling settings `encode` runs with (its `vectors` keeps autograd on)."""
        return self._embedding_pass()

    def _embedding_pass(self) -> EmbeddingPass:
        if self.config.mode == "generative":
            raise RuntimeError(
                "This EgtLM was loaded with mode='generative'; load it with mode='unified' or "
                "'embedding' to encode."
            )
        tok = self.tokenizer
        pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        return EmbeddingPass(
            body=self._loaded.body,
            pad_id=int(pad_id),
            padding_side=self.padding_side,
            pooling=self.config.pooling,
            causal=self.config.attention == "causal",
            normalize=self.config.normalize,
            capture=self.config.resolved_capture,
        )

    def encode(
        self,
        texts: str | Sequence[str],
        instruction: str | None = None,
        batch_size: int | None = None,
        max_length: int | None = None,
        dim: int | None = None,
        convert_to_tensor: bool = False,
        show_progress_bar: bool | None = None,
        get_cache: bool = False,
        method: str = "pool",
        **kwargs: Any,
    ) -> Any:
        """Embed texts: float32 [n, d] (L2-normalised by default); a single string gives [d].

        With no `instruction` the texts embed on the model's symmetric side, the one its training
        made best for comparing texts with each other: the document side (`encode_documents`), so
        `encode(texts)` is what `EgtLMEmbeddings`, the sentence-transformers module, Chroma, LlamaIndex
        and the server's `/v1/embeddings` return for texts. `prompt_name="query"` / `"document"`
        selects a role as sentence-transformers does (`encode_queries` / `encode_documents`).
        `instruction` is a finished prefix (e.g. "<|user|>\\n...\\n<|embed|>\\n"); it takes part in
        attention but not in mean-type pooling; `instruction=""` embeds the bare texts. With
        `get_cache=True` also returns one KV cache per text (padding removed, in input order).

        `method="answer"` is the older spelling of `encode_answers(texts, question=instruction, ...)`.
        """
        options = dict(
            batch_size=batch_size,
            max_length=max_length,
            dim=dim,
            convert_to_tensor=convert_to_tensor,
            show_progress_bar=show_progress_bar,
            **kwargs,
        )
        if method == "answer":
            if get_cache:
                raise TypeError("get_cache=True needs method='pool'; answer states come from generation.")
            return self.encode_answers(texts, instruction, **options)
        if method != "pool":
            raise ValueError(f"Unknown encode method {method!r}; expected 'pool' or 'answer'.")
        options["get_cache"] = get_cache
        role = options.pop("prompt_name", None)
        if role is not None or instruction is None:
            if role is not None and instruction is not None:
                raise TypeError("Pass either prompt_name or instruction to encode(), not both.")
            if role not in (None, *PROMPT_NAMES):
                raise ValueError(f"Unknown prompt_name {role!r}; expected one of {PROMPT_NAMES}.")
            side = self.encode_queries if role == "query" else self.encode_documents
            return side(texts, **options)
        return self._encode_pooled(
            texts, lambda items, limit: self.embedding_inputs(items, instruction or "", limit), **options
        )

    def _encode_pooled(
        self,
        texts: str | Sequence[str],
        tokenize: Callable[[list[str], int], list[TokenizedText]],
        batch_size: int | None = None,
        max_length: int | None = None,
        dim: int | None = None,
        convert_to_tensor: bool = False,
        show_progress_bar: bool | None = None,
        get_cache: bool = False,
        **kwargs: Any,
    ) -> Any:
        """The one pooled-embedding path: `encode` tokenizes after an instruction, RAG-context
        documents after the RAG prompt head; checks, batching and pooling are shared."""
        items, single = check_texts(texts)
        batch_size, max_length = self._encode_options(batch_size, max_length, dim, kwargs)
        # The tokenizer cannot take an empty batch; an empty list simply gives an empty [0, d] array.
        tokenized = tokenize(items, max_length) if items else []
        return self._encode_tokenized(
            tokenized, single, batch_size, max_length, dim, convert_to_tensor, show_progress_bar, get_cache
        )

    def _encode_options(
        self, batch_size: int | None, max_length: int | None, dim: int | None, extra: Mapping[str, Any]
    ) -> tuple[int, int]:
        """Checked (batch_size, max_length) of one encode call, defaults from the config."""
        unknown = set(extra) - _ACCEPTED_IGNORED
        if unknown:
            raise TypeError(f"encode() got unknown arguments {sorted(unknown)}.")
        batch_size = self.config.batch_size if batch_size is None else batch_size
        max_length = self.config.max_length if max_length is None else max_length
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
        if not isinstance(max_length, int) or isinstance(max_length, bool) or max_length < 2:
            raise ValueError(f"max_length must be an integer ≥ 2, got {max_length!r}.")
        if dim is not None and (
            not isinstance(dim, int) or isinstance(dim, bool) or not 0 < dim <= self.embedding_dim
        ):
            raise ValueError(f"dim must be an integer between 1 and {self.embedding_dim}, got {dim!r}.")
        return batch_size, max_length

    def _encode_tokenized(
        self,
        tokenized: list[TokenizedText],
        single: bool,
        batch_size: int,
        max_length: int,
        dim: int | None,
        convert_to_tensor: bool,
        show_progress_bar: bool | None,
        get_cache: bool,
    ) -> Any:
        embedding_pass = self._embedding_pass()
        warn_truncated(tokenized, max_length)
        show = show_progress_bar if show_progress_bar is not None else len(tokenized) >= 64 * batch_size
        caches: Any
        vectors, caches = (
            embedding_pass.run(
                tokenized, batch_size, dim, get_cache, show, max_batch_tokens=self.max_batch_tokens
            )
            if tokenized
            else (np.zeros((0, dim or self.embedding_dim), dtype=np.float32), [])
        )
        result: Any = torch.from_numpy(vectors) if convert_to_tensor else vectors
        if single:
            result = result[0]
            caches = caches[0] if caches else caches
        return (result, caches) if get_cache else result

    def encode_answers(
        self,
        texts: str | Sequence[str],
        question: str | None = None,
        *,
        batch_size: int | None = None,
        max_length: int | None = None,
        dim: int | None = None,
        convert_to_tensor: bool = False,
        show_progress_bar: bool | None = None,
        **options: Any,
    ) -> Any:
        """Embed texts InBedder-style: the model answers `question` about each text greedily and the
        vector comes from the answer's hidden states, so two texts are close when the model would
        answer alike about them (options `layer`, `answer_tokens`, `pool`, `answer_template`,
        `return_answers`; see `embedding/answer_states.py`).

        Example:
            >>> m.encode_answers(reviews, "What is the sentiment of this review?").shape
        """
        return encode_answers(
            self._generator(),
            self.tokenizer,
            texts,
            question,
            normalize=self.config.normalize,
            batch_size=batch_size or self.config.batch_size,
            max_length=max_length or self.config.max_length,
            convert_to_tensor=convert_to_tensor,
            show_progress_bar=show_progress_bar,
            dim=dim,
            **options,
        )

    def encode_queries(self, queries: str | Sequence[str], **kwargs: Any) -> Any:
        """Embed queries with the configured query instruction."""
        c = self.config
        return self.encode(
            queries,
            instruction=format_instruction(c.query_instruction, c.prompt_format, c.prompt_template),
            **kwargs,
        )

    def encode_documents(self, documents: Any, **kwargs: Any) -> Any:
        """Embed documents (strings or {"title", "text"} dicts) in the configured document context:
        after the document instruction, or (`document_context="rag"`) after the RAG prompt head, as
        their KV states are captured."""
        if isinstance(documents, (str, dict)):
            texts: Any = document_text(documents)
        elif documents is None or not isinstance(documents, Sequence):
            texts = check_texts(documents)[0]  # raises the same TypeError as `encode`
        else:
            texts = [d if not isinstance(d, dict) else document_text(d) for d in documents]
        if self.config.document_context == "instruction":
            return self.encode(texts, instruction=self._document_instruction(), **kwargs)
        if "instruction" in kwargs:
            raise TypeError(
                "encode_documents embeds after the RAG prompt head with document_context='rag'; "
                "call encode(texts, instruction=...) for a custom instruction."
            )
        return self._encode_pooled(texts, self.document_inputs, **kwargs)

    def _document_instruction(self) -> str:
        c = self.config
        return format_instruction(c.document_instruction, c.prompt_format, c.prompt_template)

    def document_inputs(self, texts: Sequence[str], max_length: int | None = None) -> list[TokenizedText]:
        """Documents tokenized as `encode_documents` embeds them (training's document side uses it)."""
        limit = self.config.max_length if max_length is None else max_length
        if self.config.document_context == "instruction":
            return self.embedding_inputs(texts, self._document_instruction(), limit)
        return tokenize_after_prefix(self.tokenizer, texts, self._rag.default_prefix().token_ids, limit)

    @property
    def document_pass(self) -> EmbeddingPass | None:
        """The pooling settings to embed documents from their capture pass (one forward per
        document at indexing), or None where documents are embedded in a pass of their own."""
        return self._embedding_pass() if self.config.document_context == "rag" else None

    # --- reranking --------------------------------------------------------------------------------
    def rerank(
        self, query: str, documents: Sequence[Any], top_n: int | None = None, **options: Any
    ) -> list[RankedDocument]:
        """Documents best first by the model's probability of "yes" to a relevance prompt.

        `options` go to `rerank.PointwiseReranker` (prompt=RerankPrompt(...), batch_size,
        max_document_tokens). Each result has `.index` (input position), `.score`, `.document`.

        Example:
            >>> m.rerank("capital of France?", ["Berlin is in Germany.", "Paris is in France."])[0].index
        """
        return PointwiseReranker(self._generator(), self.tokenizer, **options).rerank(query, documents, top_n)

    # --- generation -------------------------------------------------------------------------------
    def _generator(self) -> Any:
        if self.config.mode == "embedding":
            raise RuntimeError(
                "This EgtLM was loaded with mode='embedding' (no LM head); load it with "
                "mode='unified' to generate."
            )
        return self._loaded.model

    def chat(self, messages: Any, options: GenerationOptions | None = None, **kwargs: Any) -> ChatResult:
        """Answer a conversation; greedy by default. Stop strings end the answer and are not returned.

        The options (a `GenerationOptions`, and/or its fields as keyword arguments, which win):
        max_new_tokens=256, temperature=0.0, top_p=1.0, stop, reuse_cache=False, recompute_tokens,
        logits_processor, chat_template_kwargs, cancel, tools, tool_choice, response_format.
        With `reuse_cache=True`, indexed or retrieved documents found in the prompt are spliced from
        the KV store instead of prefilled (the result then also reports what was reused);
        `recompute_tokens=n` recomputes the first n tokens of each spliced document, so they see the
        documents before them. `logits_processor` constrains decoding (e.g. a grammar);
        `chat_template_kwargs` go to the chat template; setting `cancel` (a `threading.Event`) stops
        the generation within one token. Unknown options are refused.
        Generations queue for a process-wide slot (`set_generation_limit`); `result.queue_s` says
        how long this one waited.

        Tools and structured output (grammar-constrained with xgrammar, so even a small model's
        calls and objects validate):

        - `tools`: OpenAI-format tools ({"type": "function", "function": {"name", "description",
          "parameters"}}) described in the system prompt; `tool_choice` "auto"/None (the model may
          answer with a call), "none", "required"/"any"/True (some tool, grammar-forced), a tool
          name or {"type": "function", "function": {"name": ...}}. The calls land on
          `result.tool_calls` (`ToolCall`s: id, name, arguments dict); a forced call cut short by
          `max_new_tokens` leaves `result.tool_call_error`.
        - `response_format`: {"type": "json_object"} or {"type": "json_schema", "json_schema":
          {"name": ..., "schema": {...}}} (OpenAI's shapes); the answer follows the schema and is
          parsed onto `result.parsed`. Bound tools take precedence over it.

        Under a grammar `stop` strings are not applied (one inside the JSON would cut it).

        Example:
            >>> m.chat("What is the capital of France?", max_new_tokens=16).text
            >>> weather = {"type": "function", "function": {"name": "get_weather", "parameters": {
            ...     "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
            >>> m.chat("Weather in Paris?", tools=[weather], tool_choice="required").tool_calls[0].arguments
            {'city': 'Paris'}
        """
        options = GenerationOptions.from_options(kwargs, base=options)
        return self._chat(messages, options, stream=False)

    def stream_chat(
        self, messages: Any, options: GenerationOptions | None = None, **kwargs: Any
    ) -> ChatStream:
        """`chat` with the same options, yielding text pieces as they are generated.

        Inputs are checked at the call; the iterator's `.result` holds the token counts and timings
        once it is exhausted. Breaking out of the loop, `close()` or `cancel()` on the stream stops
        the generation within one token.

        Example:
            >>> with m.stream_chat("Tell me a story", max_new_tokens=200) as stream:
            ...     first = next(stream)  # leaving the block stops generating
        """
        return self._chat(messages, GenerationOptions.from_options(kwargs, base=options), stream=True)

    def _chat(self, messages: Any, options: GenerationOptions, stream: bool) -> Any:
        model = self._generator()
        constraint = OutputConstraint.resolve(
            self.tokenizer, model, options.tools or (), options.tool_choice, options.response_format
        )
        checked = constraint.prompt(check_messages(messages))
        # decoding runs with the constraint's stop strings and processors; a stream can be cancel()ed
        options = dataclasses.replace(
            options,
            stop=constraint.stop(options.stop),
            logits_processor=constraint.processors(options.logits_processor, options.max_new_tokens),
            cancel=options.cancel or (threading.Event() if stream else None),
        )
        result, pieces = self._generate(model, checked, options, stream)
        if pieces is None:
            constraint.finish(result)
            return result
        if constraint.active:
            pieces = constraint.hold(pieces, result)
        return pieces if isinstance(pieces, ChatStream) else ChatStream(pieces, result, options.cancel)

    def _generate(
        self, model: Any, messages: list[dict[str, Any]], options: GenerationOptions, stream: bool
    ) -> tuple[ChatResult, Iterator[str] | None]:
        """(result, None) run to the end, or (result to be filled, text pieces) when streaming."""
        if options.reuse_cache:
            answer = self._rag.chat(messages, options, stream=stream)
            return (answer.result, answer) if stream else (answer, None)
        config = options.generation_config(self.tokenizer, model)
        common = options.decoding()
        prompt = chat_input_ids(self.tokenizer, messages, options.chat_template_kwargs)
        if not stream:
            return generate_text(model, self.tokenizer, prompt, config, **common), None
        result = ChatResult("", 0, 0, "stop")
        return result, stream_generate(model, self.tokenizer, prompt, config, result=result, **common)

    # --- shared-cache RAG -------------------------------------------------------------------------
    @property
    def _rag(self) -> SharedCacheRAG:
        """The internal shared-cache engine (document index + KV store), created on first use."""
        with self._rag_lock:
            if self._engine is None:
                capture = (
                    "bidirectional"
                    if self.config.resolved_capture == "reuse" and self.config.attention == "bidirectional"
                    else "causal"
                )
                self._engine = SharedCacheRAG(
                    self._loaded,
                    self,
                    store=self._cache_store,
                    capture=capture,
                    documents=self._document_index,
                )
            return self._engine

    @property
    def document_cache(self) -> DocumentCache:
        """Documents and their stored KV states: add, delete, search, hand out for a prompt, capture
        heads. What adapters and the server call (see `egtlm_core.DocumentCache`).

        Example:
            >>> m.document_cache.add(["Paris is the capital of France."])
            >>> m.document_cache.search("capital of France?", k=1)[0].document.text
        """
        engine = self._rag
        with self._rag_lock:
            if self._document_cache is None:
                self._document_cache = DocumentCache(engine)
            return self._document_cache

    @property
    def documents(self) -> DocumentIndex:
        """The model's own document index (what `index` fills and `answer` searches)."""
        return self.document_cache.documents

    def index(
        self,
        documents: Sequence[Any],
        ids: Sequence[str | None] | None = None,
        metadatas: Sequence[dict[str, Any]] | None = None,
        *,
        index: DocumentIndex | None = None,
    ) -> list[str]:
        """Embed documents and store their KV states for reuse by `answer`; returns their ids.

        `index` is where the vectors go (default: the model's own, `EgtLM.documents`). A missing id
        (None) is a hash of the text. An id already present is replaced: text, metadata, vector and
        stored states.
        """
        return self.document_cache.add(documents, ids, metadatas, index=index)

    def search(self, query: str, k: int = 4, *, index: DocumentIndex | None = None) -> list[ScoredDocument]:
        """The `k` indexed documents most similar to `query` (query instruction applied), best first."""
        return self.document_cache.search(query, k, index=index)

    def answer(
        self,
        question: str,
        documents: Sequence[Any] | None = None,
        k: int = 4,
        options: GenerationOptions | None = None,
        *,
        stream: bool = False,
        **kwargs: Any,
    ) -> Any:
        """Answer a question from `documents` (or the top-k indexed ones), reusing stored KV states.

        Returns an `AnswerResult` with `.text`, `.ttft_s`, `.reused_tokens`, `.prefilled_tokens` and
        `.reuse` (what was spliced, and what each part of the prefill took). The options are
        `chat`'s (a `GenerationOptions` and/or its fields as keyword arguments), with answer's
        defaults `max_new_tokens=128` and `reuse_cache=True`; `reuse_cache=False` prefills the same
        prompt in full (the baseline). Documents not yet in the store are captured and stored on
        first use. `recompute_tokens=n` recomputes the first n tokens of each spliced document;
        `logits_processor` (transformers processors) sees every step's scores, the first token's
        included, with reuse or without. `stream=True` returns the `ChatStream` that
        `stream_answer` returns. Tools and response formats belong to `chat`.

        Example:
            >>> m.index(["Paris is the capital of France.", "Berlin is in Germany."])
            >>> m.answer("What is the capital of France?", k=1).text
        """
        self._generator()  # a clear error for mode="embedding"
        options = GenerationOptions.from_options(kwargs, base=options or ANSWER_DEFAULTS)
        if options.tools or options.response_format:
            raise ValueError("answer() takes no tools or response_format; use chat() for those.")
        if stream:  # a stream can be cancel()ed
            options = dataclasses.replace(options, cancel=options.cancel or threading.Event())
        return self._rag.answer(question, documents, k, options, stream=stream)

    def stream_answer(
        self,
        question: str,
        documents: Sequence[Any] | None = None,
        k: int = 4,
        options: GenerationOptions | None = None,
        **kwargs: Any,
    ) -> ChatStream:
        """`answer` with the same options, yielding text pieces as they are generated (as
        `stream_chat` does for `chat`): break, `close()` or `cancel()` stops it within a token."""
        stream: ChatStream = self.answer(question, documents, k, options, stream=True, **kwargs)
        return stream
