"""Pooling: token states [batch, seq, dim] -> one vector per text.

Two masks enter: `attention_mask` marks real (non-padding) tokens, `content_mask` marks the tokens
that are pooled by mean-type pooling (real tokens minus the instruction prefix). Works for left and
right padding alike, so a text pools the same whether encoded alone or in a padded batch.
"""

from __future__ import annotations

import torch

from ..config import POOLINGS


def _mean(hidden: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    weights = weights.to(hidden.dtype).unsqueeze(-1)  # [b, s, 1]
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)


def _index_of_last(mask: torch.Tensor) -> torch.Tensor:
    """Index of the last 1 in each row of a [b, s] 0/1 mask."""
    positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    return torch.where(mask.bool(), positions, torch.full_like(positions, -1)).max(dim=1).values


def _index_of_first(mask: torch.Tensor) -> torch.Tensor:
    positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    big = torch.full_like(positions, mask.shape[1])
    return torch.where(mask.bool(), positions, big).min(dim=1).values


def pool(
    hidden: torch.Tensor, attention_mask: torch.Tensor, content_mask: torch.Tensor, method: str
) -> torch.Tensor:
    """Pool token states in float32.

    Args:
        hidden: [batch, seq, dim] last hidden states.
        attention_mask: [batch, seq], 1 for real tokens.
        content_mask: [batch, seq], 1 for tokens that mean-type pooling averages.
        method: "mean" | "weightedmean" | "last" | "cls".
    """
    hidden = hidden.float()
    rows = torch.arange(hidden.shape[0], device=hidden.device)
    if method == "mean":
        return _mean(hidden, content_mask)
    if method == "weightedmean":
        # GritLM / SGPT: the i-th pooled token weighs i, so later tokens (which saw more) count more.
        return _mean(hidden, content_mask * content_mask.cumsum(dim=1))
    if method == "last":
        return hidden[rows, _index_of_last(attention_mask)]
    if method == "cls":
        return hidden[rows, _index_of_first(attention_mask)]
    raise ValueError(f"Unknown pooling {method!r}; expected one of {POOLINGS}.")
