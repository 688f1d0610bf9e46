"""Reranking with the generator: the loaded model that embeds and answers also judges relevance."""

from .pointwise import PointwiseReranker, RankedDocument
from .prompt import DEFAULT_TEMPLATE, QUERY_LIKELIHOOD_TEMPLATE, QueryLikelihoodPrompt, RerankPrompt

__all__ = [
    "DEFAULT_TEMPLATE",
    "QUERY_LIKELIHOOD_TEMPLATE",
    "PointwiseReranker",
    "QueryLikelihoodPrompt",
    "RankedDocument",
    "RerankPrompt",
]
