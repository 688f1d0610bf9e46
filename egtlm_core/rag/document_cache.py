"""`DocumentCache`: the public face of shared-cache RAG on one `EgtLM` (`EgtLM.document_cache`).

Framework adapters and the server call only these methods; the engine behind them
(`rag/engine.py`: planning, capture, re-rotation, splicing) is internal. A document's KV states are
captured after a *head* — the prompt text before the documents — and kept in the store; texts
*handed out* for a prompt are the ones a later `EgtLM.chat(reuse_cache=True)` looks for and splices.

Example:
    >>> cache = EgtLM().document_cache
    >>> ids = cache.add(["Paris is the capital of France.", "Berlin is in Germany."])
    >>> [hit.document.text for hit in cache.search("capital of France?", k=1)]  # handed out
    >>> cache.hand_out(["A text a vector store returned."])[0].stored  # False: captured on first use
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..cache import CacheKey
from .engine import SharedCacheRAG
from .index import DocumentIndex, IndexedDocument, ScoredDocument


@dataclass(frozen=True)
class HandedOut:
    """A text handed out for a prompt: the key of its states (after the given head), stored or not."""

    text: str
    key: CacheKey
    stored: bool  # whether the states are in the store now (else `chat` captures them on first use)


def prompt_head(render: Callable[[Mapping[str, str]], str], variables: Sequence[str], documents: str) -> str:
    """The text a prompt template puts before its documents: what their states are captured after.

    `render` fills every variable with the marker given for it and returns the rendered prompt
    text (chat template applied). Raises ValueError when the documents' variable is not rendered,
    or another variable comes before it (the head would then change per call).
    """
    if documents not in variables:
        raise ValueError(f"No {{{documents}}} variable among {list(variables)}.")
    markers = {name: f"\x00EGTLM_{name}\x00" for name in variables}
    head, found, _ = render(markers).partition(markers[documents])
    if not found:
        raise ValueError(f"The rendered prompt does not contain {{{documents}}}.")
    early = [name for name, marker in markers.items() if marker in head]
    if early:
        raise ValueError(
            f"The prompt puts {early} before {{{documents}}}, so the text before the documents "
            "changes per call; put the documents first."
        )
    return head


class DocumentCache:
    """Documents (vectors in a `DocumentIndex`, KV states in the store) of one `EgtLM`.

    Get it from `EgtLM.document_cache`; `EgtLM.index` / `search` / `documents` are shortcuts to it.
    `prefix` everywhere is the head the states are captured after (`capture_head`); None is
    egtlm's default RAG head (`EgtLM.answer`'s layout; other prompts reuse those states as
    approximate hits).
    """

    def __init__(self, engine: SharedCacheRAG) -> None:
        self._engine = engine

    @property
    def documents(self) -> DocumentIndex:
        """The model's own index (the default of `add` / `delete` / `search`)."""
        return self._engine.documents

    def add(
        self,
        documents: Sequence[Any],
        ids: Sequence[str | None] | None = None,
        metadatas: Sequence[Mapping[str, Any]] | None = None,
        *,
        index: DocumentIndex | None = None,
        prefix: str | None = None,
        capture_states: bool = True,
    ) -> list[str]:
        """Embed documents into `index` (default: `documents`) and store their KV states; -> ids.

        A missing id (None) is a hash of the text. An id already present is replaced (text,
        metadata, vector) and the replaced text's states are dropped.
        """
        return self._engine.add_documents(
            documents, ids, metadatas, index=index, prefix=prefix, capture_states=capture_states
        )

    def delete(
        self, ids: Sequence[str], *, index: DocumentIndex | None = None, prefix: str | None = None
    ) -> list[IndexedDocument]:
        """Remove documents from `index` (default: `documents`) and drop their states; -> the removed."""
        return self._engine.delete_documents(ids, index=index, prefix=prefix)

    def search(self, query: str, k: int = 4, *, index: DocumentIndex | None = None) -> list[ScoredDocument]:
        """The `k` documents of `index` (default: `documents`) most similar to `query`, best first.

        The hits are handed out: a later `chat(reuse_cache=True)` splices their states.
        """
        return self._engine.search(query, k, index=index)

    def capture(self, texts: Sequence[str], prefix: str | None = None) -> list[CacheKey]:
        """Capture and store texts' KV states now (no embedding; stored ones are kept); -> keys."""
        return self._engine.store_states(list(texts), prefix)

    def forget(self, texts: Sequence[str], prefix: str | None = None) -> None:
        """Drop texts' stored states (e.g. deleted from a vector store); nothing is created to do so."""
        self._engine.forget_states(list(texts), prefix)

    def hand_out(
        self, texts: Sequence[str], prefix: str | None = None, *, capture: bool = False
    ) -> list[HandedOut]:
        """Hand texts out for a prompt: `chat(reuse_cache=True)` splices their states where they appear.

        With `capture`, states not stored yet are captured now (after `prefix`). Returns each text's
        state key and whether it is stored.
        """
        texts = list(texts)
        if not texts:
            return []
        engine = self._engine
        keys = engine.store_states(texts, prefix) if capture else engine.cache_keys(texts, prefix)
        engine.remember(texts)
        store = engine.store
        return [HandedOut(t, key, store.contains(key)) for t, key in zip(texts, keys, strict=True)]

    def render_prompt(self, messages: list[dict[str, Any]], **template_kwargs: Any) -> str:
        """The prompt text `chat` plans for `messages` (chat template applied, generation header added)."""
        return self._engine.render_prompt(messages, **template_kwargs)

    def capture_head(
        self, render: Callable[[Mapping[str, str]], str], variables: Sequence[str], documents: str = "context"
    ) -> str:
        """The text a prompt template puts before its documents, to pass as `prefix` (see `prompt_head`).

        Example:
            >>> cache.capture_head(lambda m: cache.render_prompt([{"role": "user",
            ...     "content": f"Docs:\\n{m['context']}\\nQ: {m['question']}"}]), ["context", "question"])
        """
        return prompt_head(render, variables, documents)

    def stored_bytes(self) -> int:
        """Bytes the KV store holds now (0 before one exists)."""
        return self._engine.stored_bytes()
