"""Shared-cache RAG on one loaded model: index documents (vectors + KV states), answer with reuse.

Internal: `EgtLM.answer` / `chat(reuse_cache=True)` and the public `DocumentCache`
(`EgtLM.document_cache`, rag/document_cache.py) delegate here; adapters and the server call only
`DocumentCache` (a layout test holds them to that). The engine is built from what it needs — the
loaded model, an `Encoder` (an `EgtLM`) and a KV store — and imports nothing above it. The store
and the re-rotation machinery are created on first use, so plain chat never touches the disk or
inspects the model's RoPE.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from ..cache import CacheKey, CacheTier, DiskTier, MemoryTier, TieredStore, sha256_text
from ..config import EgtLMConfig
from ..embedding.encoding import EmbeddingPass, TokenizedText, warn_truncated
from ..embedding.inputs import check_texts
from ..embedding.prompts import document_text
from ..generation.chat import ChatResult, ChatStream, fit_to_context, stream_generate
from ..generation.options import GenerationOptions
from ..loading.default_model import cache_root
from ..loading.registry import LoadedModel, model_state
from ..modeling.kernels import attention_kernel
from .capture import DocumentPooling
from .index import DocumentIndex, IndexedDocument, ScoredDocument, check_k
from .kv_reuse import KVReuser, ReuseStats
from .matching import KnownDocument, plan_from_prompt
from .segment_plan import DEFAULT_SYSTEM, Segment, SegmentPlan, _ids, rag_layout

logger = logging.getLogger(__name__)

MAX_KNOWN_DOCUMENTS = 4096  # recently indexed/retrieved texts that `chat` looks for in prompts


class Encoder(Protocol):
    """What the engine needs to embed: an `EgtLM` (with its configured instructions) is one."""

    config: EgtLMConfig  # max_length: the token limit of one embedded document

    @property
    def document_pass(self) -> EmbeddingPass | None:
        """Pooling settings to embed documents from their capture pass, or None (a pass of their own)."""
        ...

    def encode_documents(self, documents: Any, **kwargs: Any) -> Any: ...

    def encode_queries(self, queries: Any, **kwargs: Any) -> Any: ...


@dataclass(eq=False)
class SharedState:
    """What every engine on one loaded model shares (one per `LoadedModel`, via `model_state`).

    An embedder, a retriever and a chat model built separately by a framework each get an engine;
    through this they share the handed-out documents (texts one of them handed out are found in
    prompts by the others) and the default store.
    """

    known: OrderedDict[str, KnownDocument] = field(default_factory=OrderedDict)  # what `chat` looks for
    known_lock: threading.Lock = field(default_factory=threading.Lock)
    store: CacheTier | None = None  # the default store, created on first use
    ram: MemoryTier = field(default_factory=lambda: MemoryTier(max_bytes=256 << 20))  # prefixes kept off disk
    persistent_prefixes: set[tuple[int, ...]] = field(default_factory=set)


@dataclass
class AnswerResult(ChatResult):
    """A RAG answer: the chat result plus what the shared cache did."""

    reused_tokens: int = 0
    prefilled_tokens: int = 0
    documents: list[str] = field(default_factory=list)
    reuse: ReuseStats | None = None


def default_store(
    model_fingerprint: str, memory_bytes: int = 1 << 30, disk_bytes: int = 10 << 30
) -> TieredStore:
    """RAM (LRU, 1 GiB) over disk (one safetensors file per document, least recently used deleted
    past 10 GiB) under the user cache dir."""
    directory = cache_root() / "kv" / model_fingerprint
    return TieredStore([MemoryTier(max_bytes=memory_bytes), DiskTier(directory, max_bytes=disk_bytes)])


class SharedCacheRAG:
    """The shared-cache retriever's engine for one loaded model.

    Args:
        loaded: the shared weights and tokenizer (`loading.registry.LoadedModel`).
        encoder: embeds documents and queries (an `EgtLM`).
        store: where document KV states live; None: the default store every engine on these weights
            shares, created on first use (RAM over disk under the user cache dir).
        capture: how document states are captured: "causal" (exact) or "bidirectional" (GRIT).
        system: the system prompt of the default RAG layout.
        documents: the engine's own index (default: a new, empty one).
    """

    def __init__(
        self,
        loaded: LoadedModel,
        encoder: Encoder,
        store: CacheTier | None = None,
        capture: str = "causal",
        system: str | None = DEFAULT_SYSTEM,
        documents: DocumentIndex | None = None,
    ):
        self.loaded = loaded
        self.encoder = encoder
        self.tokenizer = loaded.tokenizer
        self.capture = capture
        self.system = system
        # what `EgtLM.index` fills and `answer` searches by default
        self.documents = DocumentIndex() if documents is None else documents
        self._store = store
        self._reuser: KVReuser | None = None
        self._lock = threading.Lock()
        self._shared = model_state(loaded, SharedState)  # what every engine on these weights shares

    # --- built on first use -----------------------------------------------------------------------
    @property
    def store(self) -> CacheTier:
        """The KV store (the shared default one is created here, on first use)."""
        if self._store is None:
            with self.loaded.lock:
                if self._shared.store is None:
                    self._shared.store = default_store(self.loaded.fingerprint())
                self._store = self._shared.store
        return self._store

    def stored_bytes(self) -> int:
        """Bytes the KV store holds now (0 before one exists; nothing is created to say so)."""
        store = self._store if self._store is not None else self._shared.store
        return 0 if store is None else int(store.stats.bytes)

    @property
    def reuser(self) -> KVReuser:
        """Capture, fetch, re-rotate and splice states (inspects the model's RoPE on first use)."""
        with self._lock:
            if self._reuser is None:
                store = self.store
                self._reuser = KVReuser(
                    self.loaded.body,
                    self.tokenizer,
                    self.loaded.fingerprint(),
                    store,
                    capture=self.capture,
                    ram=self._shared.ram,
                    persistent_prefixes=self._shared.persistent_prefixes,
                    attention=attention_kernel(self.loaded.body),
                    storage=store.storage,
                )
                self._reuser.register_prefix(self.default_prefix())
            return self._reuser

    def _generator(self) -> Any:
        if not self.loaded.has_lm_head:
            raise RuntimeError(
                "This model was loaded without its LM head (mode='embedding'); load it with "
                "mode='unified' to answer."
            )
        return self.loaded.model

    def remember(self, texts: Sequence[str]) -> None:
        """Hand out texts as documents whose states `chat` may splice when they appear in a prompt.

        `DocumentCache.hand_out` / `search` call this for what adapters return; only these texts are
        looked for in prompts.
        """
        known = [KnownDocument(t, _ids(self.tokenizer, t)) for t in texts]
        shared = self._shared
        with shared.known_lock:
            for doc in known:
                shared.known[doc.text] = doc
                shared.known.move_to_end(doc.text)
            while len(shared.known) > MAX_KNOWN_DOCUMENTS:
                shared.known.popitem(last=False)

    def known_documents(self) -> list[KnownDocument]:
        with self._shared.known_lock:
            return list(self._shared.known.values())

    def default_prefix(self) -> Segment:
        """The prefix documents are captured after at indexing time (the default layout's head)."""
        return self.plan("?", ["."]).prefix  # type: ignore[return-value]

    def prefix_segment(self, prefix: str | None = None) -> Segment:
        """The prefix documents are captured after: a prompt's text before its documents, or the default."""
        if prefix is None:
            return self.default_prefix()
        return Segment(_ids(self.tokenizer, prefix), text=prefix, is_prefix=True)

    def cache_keys(self, texts: Sequence[str], prefix: str | None = None) -> list[CacheKey]:
        """The store keys of documents' states captured after `prefix` (see `store_states`)."""
        head = self.prefix_segment(prefix)
        return [self.reuser.key(Segment(_ids(self.tokenizer, t), text=t), head) for t in texts]

    def store_states(self, texts: Sequence[str], prefix: str | None = None) -> list[CacheKey]:
        """Capture and store documents' KV states (no embedding); returns their keys.

        `prefix` is the rendered prompt text a chain puts before its documents (`render_prompt`);
        captured after it, the first document slot of that chain's prompts is exact. Default: the
        default layout's head (`chat` still reuses those states, as approximate hits).
        """
        head = self.prefix_segment(prefix)
        segments = [Segment(_ids(self.tokenizer, t), text=t) for t in texts]
        self.reuser.register_prefix(head)  # a registered head may be persisted with its documents
        self.reuser.index(segments, head)
        return [self.reuser.key(s, head) for s in segments]

    def render_prompt(self, messages: list[dict[str, Any]], **template_kwargs: Any) -> str:
        """The chat prompt text `chat` plans (the template applied, generation header added)."""
        return self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=False, **template_kwargs
        )

    def plan(self, question: str, documents: Sequence[str]) -> SegmentPlan:
        return rag_layout(self.tokenizer, question, documents, system=self.system)

    def add_documents(
        self,
        documents: Sequence[Any],
        ids: Sequence[str | None] | None = None,
        metadatas: Sequence[Mapping[str, Any]] | None = None,
        *,
        index: DocumentIndex | None = None,
        prefix: str | None = None,
        capture_states: bool = True,
    ) -> list[str]:
        """Embed documents into `index` (default: this engine's own) and store their KV states.

        Ids default to a hash of the text (each one given as None, too). An id already present is
        replaced (text, metadata, vector) and the replaced text's stored states are dropped.
        `prefix` is the prompt text the states are captured after (see `store_states`). Returns the ids.
        """
        index = self.documents if index is None else index
        texts = [document_text(d) for d in documents]
        if ids is not None and len(ids) != len(texts):
            raise ValueError(f"Got {len(ids)} ids for {len(texts)} documents.")
        if not texts:
            return []
        given = ids if ids is not None else [None] * len(texts)
        doc_ids = [i or sha256_text(t)[:16] for i, t in zip(given, texts, strict=True)]
        one_pass = self._one_pass_pooling() if capture_states and prefix is None else None
        if one_pass is None:
            vectors = self.encoder.encode_documents(texts)
        else:
            vectors = self._capture_and_embed(texts, one_pass)
            capture_states = False  # done in the same forward
        replaced = index.upsert(doc_ids, texts, vectors, metadatas)
        kept = set(texts)  # replaced by the same text: its states stay valid
        self.forget_states([d.text for d in replaced if d.text not in kept], prefix)
        if capture_states:
            self.store_states(texts, prefix)
        return doc_ids

    def _one_pass_pooling(self) -> DocumentPooling | None:
        """How to pool vectors from the capture pass, where the encoder embeds documents exactly as
        they are captured (`document_context="rag"`, causal capture after the default head)."""
        embedding_pass = self.encoder.document_pass
        if embedding_pass is None or self.capture != "causal" or not embedding_pass.causal:
            return None
        max_tokens = self.encoder.config.max_length
        return DocumentPooling(embedding_pass.pooling, embedding_pass.normalize, max_tokens)

    def _capture_and_embed(self, texts: list[str], pooling: DocumentPooling) -> np.ndarray:
        """Vectors of `texts` pooled from the forward that captures their states (one pass)."""
        check_texts(texts)
        head = self.default_prefix()
        segments = [Segment(_ids(self.tokenizer, t), text=t) for t in texts]
        warn_truncated(
            [TokenizedText(list(s.token_ids), 0, len(s.token_ids) > pooling.max_tokens) for s in segments],
            pooling.max_tokens,
        )
        self.reuser.register_prefix(head)
        _, found = self.reuser.index_and_embed(segments, head, pooling)
        missing = [i for i, v in enumerate(found) if v is None]  # too long to capture: embed alone
        if missing:
            extra = self.encoder.encode_documents([texts[i] for i in missing])
            for i, vector in zip(missing, extra, strict=True):
                found[i] = vector
        return np.stack(found).astype(np.float32)  # type: ignore[arg-type]

    def delete_documents(
        self, ids: Sequence[str], *, index: DocumentIndex | None = None, prefix: str | None = None
    ) -> list[IndexedDocument]:
        """Remove documents from `index` and drop their stored states; -> the removed documents."""
        removed = (self.documents if index is None else index).delete(ids)
        self.forget_states([d.text for d in removed], prefix)
        return removed

    def forget_states(self, texts: Sequence[str], prefix: str | None = None) -> None:
        """Drop stored states of texts (captured after `prefix`); nothing is created to do so."""
        if texts and (self._store is not None or self._shared.store is not None):
            for key in self.cache_keys(texts, prefix):
                self.store.remove(key)

    def search(self, query: str, k: int, *, index: DocumentIndex | None = None) -> list[ScoredDocument]:
        """The `k` documents of `index` (default: this engine's own) most similar to `query`.

        The hits are handed out: a later `chat(reuse_cache=True)` splices their states where their
        text appears in the prompt.
        """
        check_k(k)
        if not isinstance(query, str) or not query.strip():
            raise ValueError("query must be a non-empty string.")
        hits = (self.documents if index is None else index).search(self.encoder.encode_queries(query), k)
        self.remember([hit.document.text for hit in hits])  # handed out: `chat` may splice them
        return hits

    def retrieve(self, question: str, k: int) -> list[str]:
        return [hit.document.text for hit in self.search(question, k)]

    def answer(
        self,
        question: str,
        documents: Sequence[Any] | None,
        k: int,
        options: GenerationOptions,
        stream: bool = False,
    ) -> Any:
        """Answer from the given documents (or the top-k indexed ones); see `EgtLM.answer`.

        `stream=True` returns a `ChatStream` (its `.result` is this answer's `AnswerResult` once the
        pieces end). `options.logits_processor` (transformers processors) sees every step's scores,
        the first token's included, on both the reuse and the full-prefill path."""
        if not isinstance(question, str) or not question.strip():
            raise ValueError("question must be a non-empty string.")
        texts = [document_text(d) for d in documents] if documents is not None else self.retrieve(question, k)
        plan = self.plan(question, texts)
        result = AnswerResult("", 0, 0, "stop", documents=texts)
        return self._start(plan, options, result, stream)

    def chat(self, messages: list[dict[str, Any]], options: GenerationOptions, stream: bool = False) -> Any:
        """Chat where known documents found in the rendered prompt are spliced from the store.

        This is how a framework chain (retriever | prompt | chat model) reuses the states of the
        documents it retrieved without changing the chain: the prompt is planned around them.
        """
        prompt = self.render_prompt(messages, **(options.chat_template_kwargs or {}))
        plan = plan_from_prompt(self.tokenizer, prompt, self.known_documents())
        result = AnswerResult("", 0, 0, "stop", documents=[s.text or "" for s in plan.documents])
        alternates = (self.default_prefix(),) if plan.documents else ()
        return self._start(plan, options, result, stream, alternates)

    def _start(
        self,
        plan: SegmentPlan,
        options: GenerationOptions,
        result: AnswerResult,
        stream: bool,
        alternates: Sequence[Segment] = (),
    ) -> Any:
        """The run's stream, or its finished result. The prompt is checked against the context here
        (`fit_to_context`), so that an over-long prompt fails at the call, not at the first piece."""
        model = self._generator()
        config = fit_to_context(model, len(plan.token_ids), options.generation_config(self.tokenizer, model))
        pieces = self._run(plan, model, config, result, options, alternates)
        if stream:
            return ChatStream(pieces, result, options.cancel)
        for _ in pieces:
            pass
        return result

    def _run(
        self,
        plan: SegmentPlan,
        model: Any,
        config: Any,
        result: AnswerResult,
        options: GenerationOptions,
        alternates: Sequence[Segment] = (),
    ) -> Iterator[str]:
        """The answer's text pieces: reused states spliced and the live tokens prefilled in one
        forward, or (`reuse_cache=False`, nothing to splice, or RoPE refuses) a full prefill."""
        start = time.perf_counter()
        ids = plan.token_ids
        reuse = options.reuse_cache and bool(plan.documents)  # nothing to splice: plain generation
        problem = self.reuser.rope.reuse_problem(len(ids) + config.max_new_tokens) if reuse else None
        if reuse and problem:
            logger.warning("Not reusing cached states: %s; prefilling the whole prompt.", problem)
        outcome = {"stats": ReuseStats(prefilled_tokens=len(ids), fallback=problem)}
        decoding = {**options.decoding(), "result": result}  # a set `cancel` stops it within a token
        if reuse and not problem:

            def prefill() -> tuple[Any, Any]:
                # One forward for every live token (separators, question) gives the first token's
                # logits; run in the generation slot, then decoding goes on without `generate`.
                cache, logits, outcome["stats"] = self.reuser.prefill(
                    plan, model, options.recompute_tokens, alternates
                )
                return cache, logits

            decoding["prefill"] = prefill
        pieces = stream_generate(model, self.tokenizer, ids, config, **decoding)
        prepared = time.perf_counter() - start
        yield from pieces
        stats = outcome["stats"]
        if "prefill" not in decoding:  # generate timed its first token from its own start
            result.ttft_s = None if result.ttft_s is None else result.ttft_s + prepared
        result.total_s = time.perf_counter() - start
        result.reused_tokens, result.prefilled_tokens, result.reuse = (
            stats.reused_tokens,
            stats.prefilled_tokens,
            stats,
        )
