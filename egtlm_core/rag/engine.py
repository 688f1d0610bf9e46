"""Shared-cache RAG on one model: index documents (vectors + KV states), answer with reuse.

`EgtLM.index` and `EgtLM.answer` delegate here; the framework adapters call those. The in-memory
vector index is deliberately small (exact cosine top-k over a numpy matrix): real deployments put
vectors in Chroma & co. and hand `answer` the retrieved documents.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..cache import CacheKey, CacheTier, DiskTier, MemoryTier, TieredStore, sha256_text
from ..embedding.prompts import document_text
from ..generation.chat import ChatResult, ChatStream, fit_to_context, generation_config, stream_generate
from ..loading.default_model import cache_root
from .kv_reuse import KVReuser, ReuseStats, check_recompute_tokens
from .segment_plan import DEFAULT_SYSTEM, Segment, SegmentPlan, _ids, plan_from_prompt, rag_layout

if TYPE_CHECKING:
    from ..model import EgtLM

logger = logging.getLogger(__name__)

MAX_KNOWN_DOCUMENTS = 4096  # recently indexed/retrieved texts that `chat` looks for in prompts


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


class VectorIndex:
    """Exact cosine search over normalised vectors, with the texts kept beside them."""

    def __init__(self) -> None:
        self.ids: list[str] = []
        self.texts: list[str] = []
        self.vectors = np.zeros((0, 0), dtype=np.float32)
        self._lock = threading.Lock()

    def add(self, ids: Sequence[str], texts: Sequence[str], vectors: np.ndarray) -> None:
        with self._lock:
            keep = [i for i, doc_id in enumerate(ids) if doc_id not in set(self.ids)]
            if not keep:
                return
            new = vectors[keep]
            self.vectors = new if not self.ids else np.vstack([self.vectors, new])
            self.ids += [ids[i] for i in keep]
            self.texts += [texts[i] for i in keep]

    def search(self, query: np.ndarray, k: int) -> list[tuple[str, str, float]]:
        with self._lock:
            if not self.ids:
                return []
            scores = self.vectors @ query
            top = np.argsort(-scores)[:k]
            return [(self.ids[i], self.texts[i], float(scores[i])) for i in top]


class SharedCacheRAG:
    """The shared-cache retriever's engine for one `EgtLM`."""

    def __init__(self, lm: EgtLM, store: CacheTier | None = None, system: str | None = DEFAULT_SYSTEM):
        self.lm = lm
        fingerprint = lm.source.fingerprint()
        # Every EgtLM on the same loaded weights (an embedder, a retriever and a chat model built
        # separately by a framework) shares the default store and the known documents, so states
        # one of them captured are found by the others.
        shared = lm._loaded.shared
        with lm._loaded.lock:
            if store is None and "kv_store" not in shared:
                shared["kv_store"] = default_store(fingerprint)
            known = shared.setdefault("known_documents", (OrderedDict(), threading.Lock()))
        self.store = store if store is not None else shared["kv_store"]
        capture = (
            "bidirectional"
            if lm.config.resolved_capture == "reuse" and lm.config.attention == "bidirectional"
            else "causal"
        )
        self.reuser = KVReuser(lm._loaded.body, lm.tokenizer, fingerprint, self.store, capture=capture)
        self.system = system
        self.vectors = VectorIndex()
        self._known: OrderedDict[str, None] = known[0]  # document texts `chat` looks for
        self._known_lock: threading.Lock = known[1]

    def remember(self, texts: Sequence[str]) -> None:
        """Mark texts as documents whose states `chat` may splice when they appear in a prompt."""
        with self._known_lock:
            for t in texts:
                self._known[t] = None
                self._known.move_to_end(t)
            while len(self._known) > MAX_KNOWN_DOCUMENTS:
                self._known.popitem(last=False)

    def known_documents(self) -> list[str]:
        with self._known_lock:
            return list(self._known)

    def default_prefix(self) -> Segment:
        """The prefix documents are captured after at indexing time (the default layout's head)."""
        return self.plan("?", ["."]).prefix  # type: ignore[return-value]

    def prefix_segment(self, prefix: str | None = None) -> Segment:
        """The prefix documents are captured after: a prompt's text before its documents, or the default."""
        if prefix is None:
            return self.default_prefix()
        return Segment(_ids(self.lm.tokenizer, prefix), text=prefix, is_prefix=True)

    def cache_keys(self, texts: Sequence[str], prefix: str | None = None) -> list[CacheKey]:
        """The store keys of documents' states captured after `prefix` (see `store_states`)."""
        head = self.prefix_segment(prefix)
        return [self.reuser.key(Segment(_ids(self.lm.tokenizer, t), text=t), head) for t in texts]

    def store_states(self, texts: Sequence[str], prefix: str | None = None) -> list[CacheKey]:
        """Capture and store documents' KV states (no embedding) and remember them; returns their keys.

        `prefix` is the rendered prompt text a chain puts before its documents (`render_prompt`);
        captured after it, the first document slot of that chain's prompts is exact. Default: the
        default layout's head (`chat` still reuses those states, as approximate hits).
        """
        head = self.prefix_segment(prefix)
        segments = [Segment(_ids(self.lm.tokenizer, t), text=t) for t in texts]
        self.remember(texts)
        self.reuser.index(segments, head)
        return [self.reuser.key(s, head) for s in segments]

    def render_prompt(self, messages: list[dict[str, Any]], **template_kwargs: Any) -> str:
        """The chat prompt text `chat` plans (the template applied, generation header added)."""
        return self.lm.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=False, **template_kwargs
        )

    def plan(self, question: str, documents: Sequence[str]) -> SegmentPlan:
        return rag_layout(self.lm.tokenizer, question, documents, system=self.system)

    def index(self, documents: Sequence[Any], ids: Sequence[str] | None = None) -> list[str]:
        """Embed documents into the vector index and store their KV states; returns their ids."""
        texts = [document_text(d) for d in documents]
        if ids is not None and len(ids) != len(texts):
            raise ValueError(f"Got {len(ids)} ids for {len(texts)} documents.")
        doc_ids = list(ids) if ids is not None else [sha256_text(t)[:16] for t in texts]
        if not texts:
            return []
        vectors = self.lm.encode_documents(texts)
        self.vectors.add(doc_ids, texts, vectors)
        self.remember(texts)
        plan = self.plan("?", texts)
        self.reuser.index(plan.documents, plan.prefix)  # type: ignore[arg-type]
        return doc_ids

    def retrieve(self, question: str, k: int) -> list[str]:
        query = self.lm.encode_queries(question)
        return [text for _, text, _ in self.vectors.search(query, k)]

    def answer(
        self,
        question: str,
        documents: Sequence[Any] | None = None,
        k: int = 4,
        reuse_cache: bool = True,
        max_new_tokens: int = 128,
        temperature: float = 0.0,
        recompute_tokens: int = 0,
        stop: Sequence[str] = (),
        stream: bool = False,
    ) -> Any:
        """Answer from the given documents (or the top-k indexed ones); see `EgtLM.answer`."""
        if not isinstance(question, str) or not question.strip():
            raise ValueError("question must be a non-empty string.")
        check_recompute_tokens(recompute_tokens)
        texts = [document_text(d) for d in documents] if documents is not None else self.retrieve(question, k)
        self.remember(texts)
        plan = self.plan(question, texts)
        model = self.lm._generator()
        config = generation_config(self.lm.tokenizer, model, max_new_tokens, temperature, 1.0)
        config = fit_to_context(model, len(plan.token_ids), config)
        result = AnswerResult("", 0, 0, "stop", documents=texts)
        pieces = self._run(plan, model, config, result, reuse_cache, recompute_tokens, stop)
        if stream:
            return pieces
        for _ in pieces:
            pass
        return result

    def chat(
        self,
        messages: list[dict[str, Any]],
        config: Any,
        reuse_cache: bool = True,
        stop: Sequence[str] = (),
        logits_processor: Any = None,
        stream: bool = False,
        recompute_tokens: int = 0,
        **template_kwargs: Any,
    ) -> Any:
        """Chat where known documents found in the rendered prompt are spliced from the store.

        This is how a framework chain (retriever | prompt | chat model) reuses the states of the
        documents it retrieved without changing the chain: the prompt is planned around them.
        """
        check_recompute_tokens(recompute_tokens)
        prompt = self.render_prompt(messages, **template_kwargs)
        plan = plan_from_prompt(self.lm.tokenizer, prompt, self.known_documents())
        result = AnswerResult("", 0, 0, "stop", documents=[s.text or "" for s in plan.documents])
        model = self.lm._generator()
        config = fit_to_context(model, len(plan.token_ids), config)
        pieces = self._run(
            plan,
            model,
            config,
            result,
            reuse_cache,
            recompute_tokens,
            stop,
            logits_processor,
            alternates=(self.default_prefix(),),
        )
        if stream:
            return ChatStream(pieces, result)
        for _ in pieces:
            pass
        return result

    def _run(
        self,
        plan: SegmentPlan,
        model: Any,
        config: Any,
        result: AnswerResult,
        reuse: bool,
        recompute_tokens: int,
        stop: Sequence[str],
        logits_processor: Any = None,
        alternates: Sequence[Segment] = (),
    ) -> Iterator[str]:
        """The answer's text pieces. Callers check the prompt against the context first
        (`fit_to_context`), so that an over-long prompt fails at the call, not at the first piece."""
        start = time.perf_counter()
        ids = plan.token_ids
        problem = self.reuser.rope.reuse_problem(len(ids) + config.max_new_tokens)
        if reuse and problem:
            logger.warning("Not reusing cached states: %s; prefilling the whole prompt.", problem)
        cache, stats = (None, ReuseStats(prefilled_tokens=len(ids), fallback=problem))
        if reuse and not problem:
            cache, stats = self.reuser.build(plan, recompute_tokens=recompute_tokens, alternates=alternates)
        yield from stream_generate(
            model,
            self.lm.tokenizer,
            ids,
            config,
            stop=stop,
            prefix_cache=cache,
            copy_cache=False,
            logits_processor=logits_processor,
            result=result,
        )
        result.ttft_s = (result.ttft_s or 0.0) + stats.build_s
        result.total_s = time.perf_counter() - start
        result.reused_tokens, result.prefilled_tokens, result.reuse = (
            stats.reused_tokens,
            stats.prefilled_tokens,
            stats,
        )
