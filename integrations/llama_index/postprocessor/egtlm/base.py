"""`EgtLMRerank`: a LlamaIndex node postprocessor that reranks with the model that also answers.

Each retrieved node is scored by the generator (`EgtLM.rerank`: P("yes") to a relevance prompt, or
the query likelihood) and the best `top_n` are kept, their `score` replaced by the reranker's.
Nodes are passed on unchanged otherwise, so `EgtLMSynthesizer` still hands the kept ones out and
`EgtLMLLM` splices their stored states. With the same `model`/`model_kwargs` as `EgtLMLLM` it uses
the same process-wide `EgtLM`: one copy of the weights.
"""

from __future__ import annotations

from typing import Any

try:
    from llama_index.core.bridge.pydantic import Field, PrivateAttr, model_validator
    from llama_index.core.postprocessor.types import BaseNodePostprocessor
    from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle
except ImportError as err:  # pragma: no cover - the extra is missing
    raise ImportError(
        "llama_index.postprocessor.egtlm needs llama-index-core: pip install 'egtlm[llamaindex]'"
    ) from err

from egtlm_core import EgtLM
from egtlm_core.adapter_kit import LazyLM


class EgtLMRerank(BaseNodePostprocessor):
    """Keep the `top_n` nodes the egtlm model judges most relevant to the query.

    Example:
        >>> from llama_index.postprocessor.egtlm import EgtLMRerank
        >>> engine = index.as_query_engine(llm=llm, similarity_top_k=10,
        ...     node_postprocessors=[EgtLMRerank(top_n=3)], response_synthesizer=EgtLMSynthesizer(llm))
    """

    model: Any = Field(default=None, description="Path, hub id, EgtLM instance, or None (packaged default).")
    model_kwargs: dict[str, Any] = Field(default_factory=dict, description="EgtLM loading arguments.")
    top_n: int | None = Field(default=3, ge=1, description="Nodes kept, best first (None: all, reordered).")
    prompt: Any = Field(
        default=None, description="egtlm_core.rerank.RerankPrompt / QueryLikelihoodPrompt; None: default."
    )
    rerank_kwargs: dict[str, Any] = Field(
        default_factory=dict, description="PointwiseReranker options (batch_size, max_document_tokens)."
    )

    _lazy: LazyLM = PrivateAttr()

    @model_validator(mode="after")
    def _build_client(self) -> EgtLMRerank:
        self._lazy = LazyLM(self.model, mode="unified", model_kwargs=self.model_kwargs)
        return self

    @classmethod
    def class_name(cls) -> str:
        return "EgtLMRerank"

    @property
    def client(self) -> EgtLM:
        """The `EgtLM` that scores (loaded on first access)."""
        return self._lazy.get()

    def _postprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        if query_bundle is None:
            raise ValueError("EgtLMRerank needs the query (a QueryBundle or query_str).")
        if not nodes:
            return []
        texts = [n.node.get_content(metadata_mode=MetadataMode.EMBED) for n in nodes]
        options = {**self.rerank_kwargs, **({"prompt": self.prompt} if self.prompt is not None else {})}
        ranked = self.client.rerank(query_bundle.query_str, texts, top_n=self.top_n, **options)
        return [NodeWithScore(node=nodes[r.index].node, score=r.score) for r in ranked]
