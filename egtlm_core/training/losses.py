"""The losses a unified model trains on, each a plain function of tensors (tested against formulas).

Embedding side: InfoNCE over in-batch and hard negatives (GritLM, E5), the EGTLM margin loss on
distances, CoSENT on scored pairs. Generative side: next-token loss on assistant tokens only, and the
block-attention distillation that teaches the model to answer from spliced document states as well
as from a full prefill.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE = -100  # label of tokens that carry no loss (prompt, padding), as in transformers


def info_nce(
    queries: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor | None, temperature: float
) -> torch.Tensor:
    """Contrastive loss: each query's positive against every positive and hard negative in the batch.

    Args:
        queries: [b, d] unit vectors.
        positives: [b, d] unit vectors, row i the positive of query i.
        negatives: [b * m, d] hard negatives (any count), or None.
        temperature: softmax temperature (GritLM uses 0.02).
    """
    candidates = positives if negatives is None else torch.cat([positives, negatives])
    logits = queries @ candidates.T / temperature  # [b, b + b*m]
    return F.cross_entropy(logits, torch.arange(queries.shape[0], device=queries.device))


def margin_loss(u: torch.Tensor, v: torch.Tensor, label: torch.Tensor, alpha: float = 0.5) -> torch.Tensor:
    """The EGTLM contrastive margin loss `(1 - l)·D² + l·max(0, α - D)²`, D = cosine distance.

    `label` is 0 for similar pairs (pulled together) and 1 for dissimilar ones (pushed past `alpha`).
    """
    distance = 1.0 - F.cosine_similarity(u, v, dim=-1)
    label = label.to(distance.dtype)
    return ((1 - label) * distance.pow(2) + label * F.relu(alpha - distance).pow(2)).mean()


def cosent(u: torch.Tensor, v: torch.Tensor, scores: torch.Tensor, scale: float = 20.0) -> torch.Tensor:
    """CoSENT: log(1 + Σ exp(s·(cos_j − cos_i))) over pairs whose gold score ranks i above j."""
    cos = F.cosine_similarity(u, v, dim=-1) * scale
    diff = cos[None, :] - cos[:, None]  # [i, j] = cos_j - cos_i
    above = scores[:, None] > scores[None, :]  # i should score higher than j
    diff = diff.masked_fill(~above, float("-inf"))
    return torch.logsumexp(torch.cat([torch.zeros(1, device=u.device), diff.flatten()]), dim=0)


def next_token_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of predicting token t+1 at t, over labels != IGNORE (assistant tokens)."""
    shifted = logits[:, :-1].reshape(-1, logits.shape[-1]).float()
    return F.cross_entropy(shifted, labels[:, 1:].reshape(-1), ignore_index=IGNORE)


def distillation_kl(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, mask: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """KL(teacher ‖ student) per token, averaged over positions where `mask` is true.

    The teacher is the frozen base model with a full causal prefill; the student sees the same
    tokens under block attention (documents that never saw each other), so the loss pulls reuse
    toward what a full prefill would answer. Scaled by T² as in Hinton et al.
    """
    t = temperature
    teacher = F.log_softmax(teacher_logits.float() / t, dim=-1)
    student = F.log_softmax(student_logits.float() / t, dim=-1)
    per_token = (teacher.exp() * (teacher - student)).sum(-1)  # [b, s]
    weights = mask.to(per_token.dtype)
    return (per_token * weights).sum() / weights.sum().clamp(min=1.0) * t * t


def similarity_kl(student: torch.Tensor, teacher: torch.Tensor, temperature: float = 0.05) -> torch.Tensor:
    """Distillation of each row's ranking: KL(softmax(teacher/τ) ‖ softmax(student/τ)) per row of two
    [b, c] similarity matrices, averaged over rows. Every candidate of a row gets a target weight from
    the teacher, not only the one labelled positive (the relative-ranking part of Jasper/Stella)."""
    target = F.log_softmax(teacher.float() / temperature, dim=-1)
    pred = F.log_softmax(student.float() / temperature, dim=-1)
    return (target.exp() * (target - pred)).sum(-1).mean()


def similarity_mse(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of two similarity matrices: the teacher's cosine of every pair is the
    student's target (Jasper/Stella's similarity loss; dimension-free, so no projection is trained)."""
    return (student.float() - teacher.float()).pow(2).mean()
