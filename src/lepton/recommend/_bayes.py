"""Bayesian matrix factorization by Gibbs sampling (BPMF with biases), and its fold-in.

The model is ``r(u, i) = mu + b_u + c_i + p_u . q_i + noise``, with Gaussian noise of
fixed precision ``alpha = 2 / var(r)`` (half the ratings' variance is noise, the setting of
Salakhutdinov & Mnih, 2008, for ratings of variance ~1), and each row ``(b, p)`` of users
(and ``(c, q)`` of items) drawn from a Gaussian whose mean and per-dimension precision have
a Normal-Gamma prior (as in libFM's MCMC). One sweep draws every user row from its exact
conditional (a batched ``(k+1)``-dimensional Cholesky solve), then every item row, then
the hyper-parameters. The answer is the *average of the predictions* of the samples kept
after burn-in, which is what makes this model beat a point estimate (SGD or ALS) on small
data: it does not overfit the many users and items with few ratings.

The average of predictions is stored exactly in one :class:`FactorModel`: with ``S`` kept
samples, ``user_factors[u] = [p_u^1, ..., p_u^S] / sqrt(S)``, the item factors likewise,
and the biases the samples' mean, so ``p . q`` of the stored rows is the mean of the
samples' dot products. ``factors`` of the stored model is ``rank * S``.

Fold-in (``partial_fit``) takes, in every sample block, one closed-form step per touched
row over the new ratings only, anchored to the row's current value with the precision of
its posterior (the fitted prior's plus a weight standing for its old ratings); a new row
gets the conditional mean given its ratings under the prior.
"""

from __future__ import annotations

import torch

from lepton.recommend._model import FactorModel

__all__ = ["fit_bayes", "fold_in_bayes"]

_CHUNK = 16_384  # ratings per outer-product chunk (bounds the memory of the Gram build)


def _normal_equations(
    rows: torch.Tensor, design: torch.Tensor, target: torch.Tensor, n_rows: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row: ``sum z z^T`` and ``sum z * t`` over its ratings (``z = design[k]``)."""
    d = design.shape[1]
    gram = torch.zeros(n_rows, d * d, dtype=design.dtype)
    for start in range(0, len(rows), _CHUNK):
        z = design[start : start + _CHUNK]
        outer = (z[:, :, None] * z[:, None, :]).reshape(len(z), d * d)
        gram.index_add_(0, rows[start : start + _CHUNK], outer)
    rhs = torch.zeros(n_rows, d, dtype=design.dtype).index_add_(0, rows, design * target[:, None])
    return gram.reshape(n_rows, d, d), rhs


def _draw_rows(
    rows: torch.Tensor,
    cols: torch.Tensor,
    target: torch.Tensor,
    other: torch.Tensor,
    n_rows: int,
    alpha: float,
    precision: torch.Tensor,
    mean: torch.Tensor,
    generator: torch.Generator,
) -> torch.Tensor:
    """Every row ``(b, v)`` drawn from its conditional given the other side's factors."""
    design = torch.cat([torch.ones(len(cols), 1, dtype=other.dtype), other[cols, 1:]], 1)
    gram, rhs = _normal_equations(rows, design, target, n_rows)
    a = alpha * gram + torch.diag(precision)
    b = alpha * rhs + precision * mean
    chol, _ = torch.linalg.cholesky_ex(a)
    centre = torch.cholesky_solve(b[:, :, None], chol)
    noise = torch.randn(centre.shape, generator=generator, dtype=other.dtype)
    spread: torch.Tensor = torch.linalg.solve_triangular(chol.transpose(1, 2), noise, upper=True)
    return (centre + spread)[:, :, 0]


def _draw_prior(x: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-dimension precision and mean of the rows' prior (Normal-Gamma, weak)."""
    n = len(x)
    centre = x.sum(0) / (n + 1)
    spread = ((x - centre) ** 2).sum(0) + centre**2
    shape = torch.full_like(centre, 1.0 + (n + 1) / 2)
    # Gamma(shape, rate) as a standard gamma scaled: torch._standard_gamma takes no generator
    precision = _gamma(shape, generator) / (1.0 + 0.5 * spread)
    noise = torch.randn(centre.shape, generator=generator, dtype=x.dtype)
    return precision, centre + noise / torch.sqrt((n + 1) * precision)


def _gamma(shape: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Standard Gamma draws by Marsaglia-Tsang (shape >= 1 here), on ``generator``."""
    d = shape - 1.0 / 3.0
    c = 1.0 / torch.sqrt(9.0 * d)
    out = torch.empty_like(shape)
    todo = torch.ones_like(shape, dtype=torch.bool)
    while bool(todo.any()):
        x = torch.randn(shape.shape, generator=generator, dtype=shape.dtype)
        v = (1.0 + c * x) ** 3
        u = torch.rand(shape.shape, generator=generator, dtype=shape.dtype)
        ok = (v > 0) & (torch.log(u) < 0.5 * x * x + d - d * v + d * torch.log(v.clamp(min=1e-30)))
        take = ok & todo
        out[take] = (d * v)[take]
        todo &= ~ok
    return out


@torch.no_grad()
def fit_bayes(
    model: FactorModel,
    users: torch.Tensor,
    items: torch.Tensor,
    ratings: torch.Tensor,
    *,
    rank: int,
    sweeps: int,
    burn_in: int,
    generator: torch.Generator,
) -> list[float]:
    """Gibbs-sample ``sweeps`` times; store the average of the kept samples in ``model``
    (its factor width must be ``rank * n_kept(sweeps, burn_in, samples)``). Returns the
    training RMSE after each sweep: of that sweep's sample, then (once samples are kept)
    of the running average. Sets ``model.hyper["prior_user"|"prior_item"]`` (factor
    dimensions, averaged) and ``"prior_user_bias"|"prior_item_bias"``: the fitted prior
    precisions over the noise precision, the ridge weights fold-in uses."""
    nu, ni = model.user_factors.shape[0], model.item_factors.shape[0]
    n_keep = model.user_factors.shape[1] // rank
    keep = kept_sweeps(sweeps, burn_in, n_keep)
    r = ratings.double()
    mu = float(r.mean())
    alpha = 2.0 / max(float(r.var()), 1e-6) if len(r) > 1 else 2.0
    d = rank + 1
    u_rows = torch.randn(nu, d, generator=generator, dtype=torch.float64) * 0.1
    i_rows = torch.randn(ni, d, generator=generator, dtype=torch.float64) * 0.1
    u_rows[:, 0] = 0.0
    i_rows[:, 0] = 0.0
    kept_u: list[torch.Tensor] = []
    kept_i: list[torch.Tensor] = []
    running = torch.zeros(len(r), dtype=torch.float64)
    history: list[float] = []
    prior_u = prior_i = torch.ones(d, dtype=torch.float64)
    for sweep in range(sweeps):
        prec_u, mean_u = _draw_prior(u_rows, generator)
        prec_i, mean_i = _draw_prior(i_rows, generator)
        target = r - mu - i_rows[items, 0]
        u_rows = _draw_rows(users, items, target, i_rows, nu, alpha, prec_u, mean_u, generator)
        target = r - mu - u_rows[users, 0]
        i_rows = _draw_rows(items, users, target, u_rows, ni, alpha, prec_i, mean_i, generator)
        fit = mu + u_rows[users, 0] + i_rows[items, 0]
        fit += (u_rows[users, 1:] * i_rows[items, 1:]).sum(-1)
        if sweep in keep:
            kept_u.append(u_rows.clone())
            kept_i.append(i_rows.clone())
            prior_u, prior_i = prior_u + prec_u, prior_i + prec_i
            running += fit
            fit = running / len(kept_u)
        history.append(float(torch.sqrt(((fit - r) ** 2).mean())))
    s = len(kept_u)
    scale = 1.0 / s**0.5
    model.mean.fill_(mu)
    model.user_bias.copy_(torch.stack([x[:, :1] for x in kept_u]).mean(0).float())
    model.item_bias.copy_(torch.stack([x[:, :1] for x in kept_i]).mean(0).float())
    model.user_factors.copy_(torch.cat([x[:, 1:] for x in kept_u], 1).float() * scale)
    model.item_factors.copy_(torch.cat([x[:, 1:] for x in kept_i], 1).float() * scale)
    prior_u, prior_i = (prior_u - 1) / s / alpha, (prior_i - 1) / s / alpha
    model.hyper["prior_user_bias"] = float(prior_u[0])
    model.hyper["prior_user"] = float(prior_u[1:].mean())
    model.hyper["prior_item_bias"] = float(prior_i[0])
    model.hyper["prior_item"] = float(prior_i[1:].mean())
    return history


def kept_sweeps(sweeps: int, burn_in: int, samples: int) -> set[int]:
    """Which sweeps are kept: ``samples`` of them, evenly spread after ``burn_in``."""
    after = max(sweeps - burn_in, 1)
    n = max(1, min(samples, after))
    step = after / n
    return {sweeps - 1 - int(j * step) for j in range(n)}


def n_kept(sweeps: int, burn_in: int, samples: int) -> int:
    """How many samples :func:`fit_bayes` keeps (the stored width is ``rank`` times it)."""
    return len(kept_sweeps(sweeps, burn_in, samples))


def _side(
    model: FactorModel,
    n_new: int,
    user_side: bool,
    rank: int,
    ridge: torch.Tensor,
) -> None:
    """One side of :func:`fold_in_bayes`, every sample block at once: for each touched
    row and block, argmin over x = (b, v) of ``sum over new ratings (t - b - v . q)^2 +
    sum_d (ridge_d + weight) (x - anchor)_d^2`` (a batched Cholesky solve)."""
    if user_side:
        rows_all, cols_all = model.seen_users, model.seen_items
        factors, bias = model.user_factors, model.user_bias
        other, other_bias = model.item_factors, model.item_bias
    else:
        rows_all, cols_all = model.seen_items, model.seen_users
        factors, bias = model.item_factors, model.item_bias
        other, other_bias = model.user_factors, model.user_bias
    rows, cols = rows_all[-n_new:], cols_all[-n_new:]
    blocks = factors.shape[1] // rank
    scale = blocks**0.5  # stored rows are the samples / sqrt(S)
    touched, slot = torch.unique(rows, return_inverse=True)
    n_old = torch.bincount(rows_all[:-n_new], minlength=factors.shape[0])[touched].float()
    # what one old rating adds to the diagonal of a row's normal equations, on average,
    # per block: (1 + mean |q|^2 over the old ratings) / (rank + 1)
    uses = torch.bincount(cols_all[:-n_new], minlength=other.shape[0]).float()
    norms = ((other.reshape(len(other), blocks, rank) * scale) ** 2).sum(-1)  # (n, blocks)
    x2 = 1.0 + (uses @ norms) / uses.sum().clamp(min=1.0)  # (blocks,)
    precision = ridge + (n_old[:, None] * x2[None, :] / (rank + 1))[:, :, None]  # (t, S, d)
    d = rank + 1
    q = other[cols].reshape(n_new, blocks, rank) * scale
    design = torch.cat([torch.ones(n_new, blocks, 1), q], 2)  # (n_new, S, d)
    target = model.seen_ratings[-n_new:] - model.mean - other_bias[cols, 0]
    outer = design[:, :, :, None] * design[:, :, None, :]
    gram = torch.zeros(len(touched), blocks, d, d).index_add_(0, slot, outer)
    rhs = torch.zeros(len(touched), blocks, d).index_add_(0, slot, design * target[:, None, None])
    anchor = torch.cat(
        [
            bias[touched][:, None, :].expand(-1, blocks, 1),
            factors[touched].reshape(len(touched), blocks, rank) * scale,
        ],
        2,
    )
    gram.diagonal(dim1=2, dim2=3).add_(precision)
    rhs += precision * anchor
    chol, _ = torch.linalg.cholesky_ex(gram)
    x = torch.cholesky_solve(rhs[..., None], chol)[..., 0]  # (touched, S, d)
    bias[touched, 0] = x[:, :, 0].mean(1)
    factors[touched] = x[:, :, 1:].reshape(len(touched), blocks * rank) / scale


@torch.no_grad()
def fold_in_bayes(model: FactorModel, n_new: int, rank: int) -> None:
    """Fold the last ``n_new`` stored ratings into a Gibbs-fitted model: in each sample
    block, one closed-form step per touched user (then item) over the new ratings only,
    anchored to the row's current value with its posterior precision (the fitted
    prior's plus a weight standing for its old ratings). Untouched rows do not move; the cost is
    O(n_new * samples * rank^2), independent of the ratings already fitted."""
    for side in ("user", "item"):
        h = model.hyper
        ridge = torch.full((rank + 1,), float(h.get(f"prior_{side}", 1.0)))
        ridge[0] = float(h.get(f"prior_{side}_bias", 1.0))
        _side(model, n_new, side == "user", rank, ridge)
