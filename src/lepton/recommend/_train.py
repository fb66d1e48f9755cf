"""The solvers: mini-batch training of the factors, BPR, and the closed-form fold-in.

Explicit ratings minimise, per rating, ``(r - r_hat)^2 + reg * (|p_u|^2 + |q_i|^2 + b_u^2
+ b_i^2)`` with Adam on sparse gradients (only the rows in a batch move), which is the
objective of Funk/Surprise SVD with an adaptive step. Implicit feedback uses BPR: for a
seen pair ``(u, i)`` and a sampled unseen ``j``, maximise ``log sigmoid(x_ui - x_uj)``.

Fold-in (``partial_fit``) holds the other side fixed and takes one closed-form step per
touched user (then item) over the new ratings only, anchored to the row's current value
with a weight standing for its old ratings; only those rows move, and the cost does not
grow with the data already fitted.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lepton.recommend._model import FactorModel

__all__ = ["fit_bpr", "fit_explicit", "fit_genres", "fold_in"]


def _embeddings(model: FactorModel) -> list[torch.nn.Parameter]:
    return [model.user_factors, model.item_factors, model.user_bias, model.item_bias]


def _rows(weight: torch.nn.Parameter, index: torch.Tensor) -> torch.Tensor:
    # a sparse gradient: a step touches only the rows in the batch, not the whole table
    return F.embedding(index, weight, sparse=True)


def fit_explicit(
    model: FactorModel,
    users: torch.Tensor,
    items: torch.Tensor,
    ratings: torch.Tensor,
    *,
    epochs: int,
    lr: float,
    reg: float,
    batch_size: int,
    generator: torch.Generator,
) -> list[float]:
    """Train in place; returns the mean training loss of each epoch."""
    params = _embeddings(model)
    opt = torch.optim.SparseAdam(params, lr=lr)
    losses = []
    n = len(ratings)
    for _ in range(epochs):
        order = torch.randperm(n, generator=generator)
        total = 0.0
        for start in range(0, n, batch_size):
            b = order[start : start + batch_size]
            u, i, r = users[b], items[b], ratings[b]
            p, q = _rows(model.user_factors, u), _rows(model.item_factors, i)
            bu, bi = _rows(model.user_bias, u)[:, 0], _rows(model.item_bias, i)[:, 0]
            err = model.mean + bu + bi + (p * q).sum(-1) - r
            penalty = (p * p).sum(-1) + (q * q).sum(-1) + bu * bu + bi * bi
            loss = (err * err + reg * penalty).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()  # type: ignore[no-untyped-call]
            total += float(loss.detach()) * len(b)
        losses.append(total / n)
    return losses


def fit_bpr(
    model: FactorModel,
    users: torch.Tensor,
    items: torch.Tensor,
    *,
    epochs: int,
    lr: float,
    reg: float,
    batch_size: int,
    generator: torch.Generator,
) -> list[float]:
    """BPR with one uniformly sampled negative per positive (a sampled negative that is in
    fact seen is rare on sparse data and only adds noise)."""
    params = _embeddings(model)
    opt = torch.optim.SparseAdam(params, lr=lr)
    n_items, n, losses = model.item_factors.shape[0], len(users), []
    for _ in range(epochs):
        order = torch.randperm(n, generator=generator)
        negatives = torch.randint(0, n_items, (n,), generator=generator)
        total = 0.0
        for start in range(0, n, batch_size):
            b = order[start : start + batch_size]
            u, i, j = users[b], items[b], negatives[b]
            p = _rows(model.user_factors, u)
            qi, qj = _rows(model.item_factors, i), _rows(model.item_factors, j)
            x = (p * (qi - qj)).sum(-1) + (_rows(model.item_bias, i) - _rows(model.item_bias, j))[
                :, 0
            ]
            penalty = (p * p).sum(-1) + (qi * qi).sum(-1) + (qj * qj).sum(-1)
            loss = (-F.logsigmoid(x) + reg * penalty).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()  # type: ignore[no-untyped-call]
            total += float(loss.detach()) * len(b)
        losses.append(total / n)
    return losses


def _solve_rows(
    rows: torch.Tensor,
    other: torch.Tensor,
    target: torch.Tensor,
    fixed: torch.Tensor,
    wanted: torch.Tensor,
    reg: float,
    anchor: torch.Tensor,
    weight: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """For each row index in ``wanted`` (with current values ``anchor``): argmin over
    x = (b, v) of ``sum (target - b - v . fixed[other])^2 + reg * n * |x|^2
    + weight * |x - anchor|^2``, over the given ratings only."""
    k = fixed.shape[1]
    slot = torch.full((max(int(rows.max()), int(wanted.max())) + 1,), -1, dtype=torch.int64)
    slot[wanted] = torch.arange(len(wanted))
    keep = slot[rows] >= 0
    s, x_other, y = slot[rows[keep]], fixed[other[keep]], target[keep]
    x = torch.cat([torch.ones(len(s), 1), x_other], 1)
    a = torch.zeros(len(wanted), k + 1, k + 1).index_add_(0, s, x[:, :, None] * x[:, None, :])
    rhs = torch.zeros(len(wanted), k + 1).index_add_(0, s, x * y[:, None])
    count = torch.bincount(s, minlength=len(wanted)).float()
    diag = (reg * count + weight.float()).clamp(min=reg)
    a.diagonal(dim1=1, dim2=2).add_(diag[:, None])  # symmetric positive definite
    rhs += weight.float()[:, None] * anchor
    chol, _ = torch.linalg.cholesky_ex(a)
    solution = torch.cholesky_solve(rhs[:, :, None], chol)[:, :, 0]
    return solution[:, 0], solution[:, 1:]


def _curvature(factors: torch.Tensor, index: torch.Tensor, reg: float) -> float:
    """Average per-rating curvature of the squared error in one coordinate of (b, v):
    what each old rating adds to the diagonal of a row's normal equations."""
    counts = torch.bincount(index, minlength=factors.shape[0]).float()
    x2 = 1.0 + (factors * factors).sum(-1)
    return float(counts @ x2) / max(float(counts.sum()), 1.0) / (factors.shape[1] + 1) + reg


@torch.no_grad()
def fold_in(model: FactorModel, n_new: int, reg: float) -> None:
    """Fold the last ``n_new`` stored ratings in: one closed-form local step per touched
    user (then item) over the new ratings only, anchored to the row's current value with
    a weight standing for its old ratings (``curvature * n_old``). A new row has no old
    ratings, so its step is the exact ridge solution. Rows not touched do not move, and
    the cost is O(n_new * factors^2), independent of the data already fitted."""
    users, items = model.seen_users[-n_new:], model.seen_items[-n_new:]
    ratings = model.seen_ratings[-n_new:]
    old_u, old_i = model.seen_users[:-n_new], model.seen_items[:-n_new]
    touched = torch.unique(users)
    n_old = torch.bincount(old_u, minlength=len(model.user_ids))[touched].double()
    weight = n_old * _curvature(model.item_factors, old_i, reg) if len(old_u) else n_old
    anchor = torch.cat([model.user_bias[touched], model.user_factors[touched]], 1)
    target = ratings - model.mean - model.item_bias[items, 0]
    b, v = _solve_rows(users, items, target, model.item_factors, touched, reg, anchor, weight)
    model.user_bias[touched, 0], model.user_factors[touched] = b, v
    touched = torch.unique(items)
    n_old = torch.bincount(old_i, minlength=len(model.item_ids))[touched].double()
    weight = n_old * _curvature(model.user_factors, old_u, reg) if len(old_i) else n_old
    anchor = torch.cat([model.item_bias[touched], model.item_factors[touched]], 1)
    target = ratings - model.mean - model.user_bias[users, 0]
    b, v = _solve_rows(items, users, target, model.user_factors, touched, reg, anchor, weight)
    model.item_bias[touched, 0], model.item_factors[touched] = b, v


@torch.no_grad()
def fit_genres(model: FactorModel, reg: float = 1.0) -> None:
    """Ridge regression of item factors and biases on genre indicators, so an item with
    no ratings starts from the average of its genres (cold start)."""
    g = model.item_genres
    if g.shape[1] == 0:
        return
    rated = torch.zeros(g.shape[0], dtype=torch.bool)
    rated[model.seen_items] = True
    x = g[rated].double()
    y = torch.cat([model.item_factors[rated], model.item_bias[rated]], 1).double()
    a = x.T @ x + reg * torch.eye(x.shape[1], dtype=torch.float64)
    w = torch.linalg.solve(a, x.T @ y).float()
    model.genre_factors.copy_(w[:, :-1])
    model.genre_bias.copy_(w[:, -1])
