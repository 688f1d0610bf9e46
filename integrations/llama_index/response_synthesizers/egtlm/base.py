"""`EgtLMSynthesizer`: LlamaIndex's default synthesizer (compact and refine) with the shared KV cache.

A response synthesizer is the one place of a query engine that sees the retrieved nodes, the
text-QA template and the finished response, so the shared cache needs nothing else swapped in:
the retriever, the vector store (Chroma, ...) and `index.as_query_engine` stay as they are.

Per query it hands the nodes out to the model (`DocumentCache.hand_out`: only handed-out texts are spliced,
docs/shared_cache.md), makes sure their states are stored, captured after the text the template puts
before `{context_str}` (so the first document slot is exact), and lets `EgtLMLLM` answer: the core
finds the nodes in the prompt and splices their states. `response.metadata["egtlm"]` reports what
was reused (exact / approximate slots, recomputed tokens, misses).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Generator, Iterator, Mapping, Sequence
from typing import Any

try:
    from llama_index.core import Settings
    from llama_index.core.base.response.schema import AsyncStreamingResponse, StreamingResponse
    from llama_index.core.response_synthesizers import CompactAndRefine
    from llama_index.core.schema import BaseNode, MetadataMode, NodeWithScore
    from llama_index.llms.egtlm import EgtLMLLM, collect_reports
except ImportError as err:  # pragma: no cover - the extra is missing
    raise ImportError("EgtLMSynthesizer needs llama-index-core: pip install 'egtlm[llamaindex]'") from err

from egtlm_core.adapter_kit import CacheKey

logger = logging.getLogger(__name__)

REPORT = "egtlm"  # response.metadata key of the shared-cache report
_SUMMED = (
    "reused_tokens",
    "prefilled_tokens",
    "exact_slots",
    "approximate_slots",
    "recomputed_tokens",
    "hits",
    "approximate_hits",
    "misses",
    "prompt_tokens",
    "completion_tokens",
)


class EgtLMSynthesizer(CompactAndRefine):
    """Compact-and-refine synthesis where retrieved nodes' stored KV states are spliced, not prefilled.

    Args:
        llm: the `EgtLMLLM` that answers (None: `Settings.llm` if that is one, else one on the
            packaged default model).
        capture_states: store the states of retrieved nodes not stored yet (captured once, after the
            template's head; later queries, and later processes through the disk tier, reuse them).
        **kwargs: `CompactAndRefine` arguments (text_qa_template, refine_template, streaming, ...).

    Example:
        >>> llm = EgtLMLLM()
        >>> engine = index.as_query_engine(llm=llm, similarity_top_k=4,
        ...                                response_synthesizer=EgtLMSynthesizer(llm))
        >>> engine.query("How tall is the Eiffel Tower?").metadata["egtlm"]["reused_tokens"]
    """

    def __init__(self, llm: EgtLMLLM | None = None, *, capture_states: bool = True, **kwargs: Any) -> None:
        if llm is None:  # Settings._llm: reading Settings.llm would build LlamaIndex's OpenAI default
            llm = Settings._llm if isinstance(Settings._llm, EgtLMLLM) else EgtLMLLM()
        if not isinstance(llm, EgtLMLLM):
            raise TypeError(
                f"EgtLMSynthesizer needs an EgtLMLLM (its states live there), got {type(llm).__name__}."
            )
        super().__init__(llm=llm, **kwargs)
        self.capture_states = capture_states
        self._head: tuple[Any, str | None] | None = None
        self._lock = threading.Lock()

    @property
    def llm(self) -> EgtLMLLM:
        return self._llm  # type: ignore[return-value]

    # --- the capture head -------------------------------------------------------------------------
    def capture_prefix(self) -> str | None:
        """The rendered prompt text before `{context_str}` (None: the core's default RAG head)."""
        template = self._text_qa_template
        with self._lock:
            if self._head is None or self._head[0] is not template:
                self._head = (template, self._render_head(template))
            return self._head[1]

    def _render_head(self, template: Any) -> str | None:
        def render(markers: Mapping[str, str]) -> str:
            return self.llm.prompt_text(template.format_messages(llm=self._llm, **markers))

        try:
            return self.llm.client.document_cache.capture_head(
                render, ["context_str", "query_str"], "context_str"
            )
        except ValueError as err:
            logger.warning(
                "%s Documents are captured after egtlm's default head and reused as approximate slots.", err
            )
            return None

    # --- handing nodes out ------------------------------------------------------------------------
    def store_states(self, nodes: Sequence[BaseNode | NodeWithScore | str]) -> list[CacheKey]:
        """Capture and store nodes' states now (at indexing), as the query engine's prompt holds them."""
        texts = [_llm_text(n) for n in nodes]
        return self.llm.client.document_cache.capture([t for t in texts if t], self.capture_prefix())

    def _hand_out(self, text_chunks: Sequence[str]) -> None:
        texts = [t.strip() for t in text_chunks if t.strip()]  # as `PromptHelper.repack` puts them in
        # Stored states are hits: capturing recomputes nothing.
        self.llm.client.document_cache.hand_out(texts, self.capture_prefix(), capture=self.capture_states)

    def get_response(self, query_str: str, text_chunks: Sequence[str], **kwargs: Any) -> Any:
        self._hand_out(text_chunks)
        return super().get_response(query_str, text_chunks, **kwargs)

    async def aget_response(self, query_str: str, text_chunks: Sequence[str], **kwargs: Any) -> Any:
        await asyncio.to_thread(self._hand_out, text_chunks)
        return await super().aget_response(query_str, text_chunks, **kwargs)

    # --- the report -------------------------------------------------------------------------------
    def synthesize(self, query: Any, nodes: list[NodeWithScore], *args: Any, **kwargs: Any) -> Any:
        with collect_reports() as reports:
            response = super().synthesize(query, nodes, *args, **kwargs)
        return _with_report(response, reports)

    async def asynthesize(self, query: Any, nodes: list[NodeWithScore], *args: Any, **kwargs: Any) -> Any:
        with collect_reports() as reports:
            response = await super().asynthesize(query, nodes, *args, **kwargs)
        return _with_report(response, reports)


def _llm_text(node: BaseNode | NodeWithScore | str) -> str:
    if isinstance(node, str):
        return node.strip()
    node = node.node if isinstance(node, NodeWithScore) else node
    return node.get_content(metadata_mode=MetadataMode.LLM).strip()


def summarize(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """One report per query: the call's own, or the sums over refine calls with each call listed."""
    if len(reports) == 1:
        return dict(reports[0])
    total: dict[str, Any] = {k: sum(int(r.get(k) or 0) for r in reports) for k in _SUMMED}
    total.update(llm_calls=len(reports), calls=list(reports))
    return total


def _with_report(response: Any, reports: list[dict[str, Any]]) -> Any:
    if response.metadata is None:
        response.metadata = {}
    if isinstance(response, StreamingResponse) and response.response_gen is not None:
        response.response_gen = _tracked(response.response_gen, response, reports)
    elif isinstance(response, AsyncStreamingResponse):
        response.response_gen = _atracked(response.response_gen, response, reports)
    elif reports:
        response.metadata[REPORT] = summarize(reports)
    return response


def _tracked(
    tokens: Iterator[str], response: Any, started: list[dict[str, Any]]
) -> Generator[str, None, None]:
    """A streamed answer's tokens; its report lands in the metadata when the stream ends.

    Generations started while synthesizing report into `started`; LlamaIndex starts some lazily,
    while the stream is consumed, and those report into the collector opened here."""
    with collect_reports() as late:
        yield from tokens
    if started or late:
        response.metadata[REPORT] = summarize([*started, *late])


async def _atracked(
    tokens: AsyncIterator[str], response: Any, started: list[dict[str, Any]]
) -> AsyncGenerator[str, None]:
    with collect_reports() as late:
        async for token in tokens:
            yield token
    if started or late:
        response.metadata[REPORT] = summarize([*started, *late])
