"""Each training loss against its formula, written out independently here (loops, no shared code)."""

from __future__ import annotations

import math

import torch

from egtlm_core.training import cosent, distillation_kl, info_nce, margin_loss, next_token_loss


def _unit(*shape: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(*shape, generator=g, dtype=torch.float64)
    return v / v.norm(dim=-1, keepdim=True)


def test_info_nce_with_in_batch_and_hard_negatives():
    q, p, n = _unit(4, 8, seed=1), _unit(4, 8, seed=2), _unit(6, 8, seed=3)
    t = 0.05
    expected = 0.0
    for i in range(4):
        candidates = [float(q[i] @ p[j]) / t for j in range(4)] + [float(q[i] @ n[j]) / t for j in range(6)]
        expected += -candidates[i] + math.log(sum(math.exp(c) for c in candidates))
    assert math.isclose(float(info_nce(q, p, n, t)), expected / 4, rel_tol=1e-9)
    no_neg = sum(
        -float(q[i] @ p[i]) / t + math.log(sum(math.exp(float(q[i] @ p[j]) / t) for j in range(4)))
        for i in range(4)
    )
    assert math.isclose(float(info_nce(q, p, None, t)), no_neg / 4, rel_tol=1e-9)


def test_margin_loss_is_the_egtlm_formula():
    u, v = _unit(5, 6, seed=4), _unit(5, 6, seed=5)
    labels = torch.tensor([0, 1, 0, 1, 1])
    alpha = 0.6
    expected = 0.0
    for i in range(5):
        d = 1 - float(u[i] @ v[i])  # unit vectors: cosine = dot
        expected += d * d if labels[i] == 0 else max(0.0, alpha - d) ** 2
    assert math.isclose(float(margin_loss(u, v, labels, alpha)), expected / 5, rel_tol=1e-9)


def test_cosent_sums_over_wrongly_ordered_pairs():
    u, v = _unit(4, 6, seed=6), _unit(4, 6, seed=7)
    scores = torch.tensor([3.0, 1.0, 4.5, 1.0], dtype=torch.float64)
    s = 20.0
    cos = [float(u[i] @ v[i]) for i in range(4)]
    terms = [s * (cos[j] - cos[i]) for i in range(4) for j in range(4) if scores[i] > scores[j]]
    expected = math.log(1 + sum(math.exp(x) for x in terms))
    assert math.isclose(float(cosent(u, v, scores, s)), expected, rel_tol=1e-9)
    # Perfectly ordered with a large margin: the loss goes to zero.
    aligned = cosent(u, u, torch.tensor([1.0, 1.0, 1.0, 1.0]), s)
    assert float(aligned) == 0.0


def test_next_token_loss_counts_only_labelled_positions():
    g = torch.Generator().manual_seed(8)
    logits = torch.randn(2, 5, 7, generator=g)
    labels = torch.tensor([[-100, -100, 3, 4, -100], [-100, 1, 2, -100, -100]])
    terms = []
    for b in range(2):
        for t in range(4):
            target = int(labels[b, t + 1])
            if target != -100:
                row = logits[b, t]
                terms.append(-(row[target] - torch.logsumexp(row, 0)).item())
    assert math.isclose(float(next_token_loss(logits, labels)), sum(terms) / len(terms), rel_tol=1e-6)


def test_distillation_kl_over_masked_positions():
    g = torch.Generator().manual_seed(9)
    student, teacher = torch.randn(1, 4, 5, generator=g), torch.randn(1, 4, 5, generator=g)
    mask = torch.tensor([[False, True, True, False]])
    temp = 2.0
    expected = 0.0
    for t in (1, 2):
        p = torch.softmax(teacher[0, t] / temp, 0)
        q = torch.softmax(student[0, t] / temp, 0)
        expected += float((p * (p.log() - q.log())).sum())
    expected = expected / 2 * temp * temp
    assert math.isclose(float(distillation_kl(student, teacher, mask, temp)), expected, rel_tol=1e-5)
    assert float(distillation_kl(teacher, teacher, mask)) < 1e-6


def test_similarity_kl_is_the_row_wise_kl_of_softmaxes():
    from egtlm_core.training.losses import similarity_kl

    s, t, tau = _unit(3, 5, seed=6) * 0.9, _unit(3, 5, seed=7) * 0.8, 0.1
    expected = 0.0
    for i in range(3):
        zs = sum(math.exp(float(s[i, j]) / tau) for j in range(5))
        zt = sum(math.exp(float(t[i, j]) / tau) for j in range(5))
        for j in range(5):
            p = math.exp(float(t[i, j]) / tau) / zt
            q = math.exp(float(s[i, j]) / tau) / zs
            expected += p * math.log(p / q)
    assert math.isclose(float(similarity_kl(s, t, tau)), expected / 3, rel_tol=1e-6)
    assert float(similarity_kl(t, t, tau)) < 1e-9  # the teacher's own ranking costs nothing


def test_similarity_mse_and_the_teacher_loss_of_a_batch():
    from egtlm_core.training.losses import similarity_mse
    from egtlm_core.training.trainer import teacher_loss

    q, c, tq, tc = _unit(2, 4, seed=8), _unit(3, 4, seed=9), _unit(2, 6, seed=10), _unit(3, 6, seed=11)
    cross = sum((float(q[i] @ c[j]) - float(tq[i] @ tc[j])) ** 2 for i in range(2) for j in range(3)) / 6
    among = [(float(c[i] @ c[j]) - float(tc[i] @ tc[j])) ** 2 for i in range(3) for j in range(3) if i != j]
    assert math.isclose(float(similarity_mse(q @ c.T, tq @ tc.T)), cross, rel_tol=1e-6)  # float32 math
    from egtlm_core.training.losses import similarity_kl

    expected = float(similarity_kl(q @ c.T, tq @ tc.T, 0.05)) + 10.0 * (cross + sum(among) / len(among))
    assert math.isclose(float(teacher_loss(q, c, tq, tc, 0.05, 10.0)), expected, rel_tol=1e-6)
    # the student's dimension (4) and the teacher's (6) differ: similarities need no projection
