"""Implicit-feedback ALS: our own on torch (Hu, Koren & Volinsky, 2008), and PyPI
``implicit``'s as an option.

Every (user, item) pair is a preference of 1 if the user interacted with the item and 0
otherwise; an interaction is trusted with confidence ``1 + alpha`` and a non-interaction
with 1. Each sweep solves every user row given the items (``(Y^T Y + sum over the
user's items of alpha y y^T + reg I) x = (1 + alpha) sum y``), then every item row given
the users, by three conjugate-gradient steps warm-started from the previous sweep (as
``implicit`` does by default; ``Y^T Y`` is shared, so a sweep costs O(interactions *
factors) plus O((users + items) * factors^2)). Ranking score is ``p_u . q_i``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from lepton.errors import RecommendError
from lepton.recommend._model import FactorModel

__all__ = ["fit_ials", "fit_implicit_library"]


def _solve_side(
    rows: torch.Tensor,
    cols: torch.Tensor,
    other: torch.Tensor,
    start: torch.Tensor,
    alpha: float,
    reg: float,
    steps: int = 3,
) -> torch.Tensor:
    """Every row's least-squares solve given ``other``, by ``steps`` conjugate-gradient
    steps from ``start`` (the matrix-vector product is O(interactions * factors))."""
    k = other.shape[1]
    shared = other.T @ other + reg * torch.eye(k, dtype=other.dtype)
    y = other[cols]

    def times(x: torch.Tensor) -> torch.Tensor:
        weight = alpha * (x[rows] * y).sum(-1)
        return x @ shared + torch.zeros_like(x).index_add_(0, rows, y * weight[:, None])

    x = start.clone()
    b = torch.zeros_like(x).index_add_(0, rows, y * (1.0 + alpha))
    r = b - times(x)
    p = r.clone()
    rr = (r * r).sum(-1)
    for _ in range(steps):
        ap = times(p)
        a = rr / (p * ap).sum(-1).clamp(min=1e-20)
        x += a[:, None] * p
        r -= a[:, None] * ap
        new = (r * r).sum(-1)
        p = r + (new / rr.clamp(min=1e-20))[:, None] * p
        rr = new
    return x


@torch.no_grad()
def fit_ials(
    model: FactorModel,
    users: torch.Tensor,
    items: torch.Tensor,
    *,
    epochs: int,
    reg: float,
    alpha: float,
    generator: torch.Generator,
) -> list[float]:
    """Implicit ALS in place; returns, per sweep, the weighted training loss per
    interaction. Duplicate (user, item) pairs count once."""
    nu, ni, k = model.user_factors.shape[0], model.item_factors.shape[0], model.factors
    pairs = torch.unique(users * ni + items)
    u, i = pairs // ni, pairs % ni
    p = torch.randn(nu, k, generator=generator) * 0.01
    q = torch.randn(ni, k, generator=generator) * 0.01
    losses = []
    for _ in range(epochs):
        p = _solve_side(u, i, q, p, alpha, reg)
        q = _solve_side(i, u, p, q, alpha, reg)
        hit = (p[u] * q[i]).sum(-1)
        everything = float(((p.T @ p) * (q.T @ q)).sum())  # sum over all pairs of x^2
        loss = everything + float(((1 + alpha) * (1 - hit) ** 2 - hit**2).sum())
        losses.append((loss + reg * float((p * p).sum() + (q * q).sum())) / len(u))
    model.user_factors.copy_(p.float())
    model.item_factors.copy_(q.float())
    model.user_bias.zero_()
    model.item_bias.zero_()
    model.mean.zero_()
    return losses


def fit_implicit_library(
    model: FactorModel,
    users: torch.Tensor,
    items: torch.Tensor,
    *,
    epochs: int,
    reg: float,
    alpha: float,
    seed: int,
) -> list[float]:
    """ALS of PyPI ``implicit`` (CPU) on the binary interaction matrix, its factors
    copied into ``model``; the loss is not reported by the library, so the list is
    empty. BLAS runs on one thread during the fit (the library's own advice)."""
    try:
        import scipy.sparse as sp
        from implicit.cpu.als import AlternatingLeastSquares  # type: ignore[import-untyped]
    except ImportError:
        raise RecommendError(
            "algorithm='implicit-als' needs PyPI implicit: pip install 'lepton[recommend]' "
            "(or pip install implicit==0.7.3), or use algorithm='als' (ours, on torch)"
        ) from None
    nu, ni, k = model.user_factors.shape[0], model.item_factors.shape[0], model.factors
    values = np.ones(len(users), np.float32)
    matrix: Any = sp.csr_matrix((values, (users.numpy(), items.numpy())), shape=(nu, ni))
    matrix.data[:] = 1.0  # duplicates count once
    from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]  # implicit's

    with threadpool_limits(1, "blas"):  # the library's advice: its own threads do the work
        als = AlternatingLeastSquares(
            factors=k, regularization=reg, alpha=alpha, iterations=epochs, random_state=seed,
            calculate_training_loss=False,
        )  # fmt: skip
        als.fit(matrix, show_progress=False)
    with torch.no_grad():
        model.user_factors.copy_(torch.from_numpy(np.asarray(als.user_factors, np.float32)))
        model.item_factors.copy_(torch.from_numpy(np.asarray(als.item_factors, np.float32)))
        model.user_bias.zero_()
        model.item_bias.zero_()
        model.mean.zero_()
    return []
