"""The factor model as an ``nn.Module``: what the registry stores and rebuilds.

Everything a :class:`~lepton.recommend.Recommender` needs after a restart lives here: the
id maps (in the constructor arguments, so they land in the manifest's JSON), the factors,
biases and genre factors (parameters), and the training interactions (buffers: they
drive ``exclude_seen``, fold-in and ``refit``). So ``lp.register`` writes one safetensors
file and a JSON manifest, and ``lp.load_model`` rebuilds it; nothing is pickled.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from lepton.models import register_model

__all__ = ["FactorModel"]


@register_model("recommender-mf")
class FactorModel(nn.Module):
    """Biased matrix factorization ``r(u, i) = mu + b_u + b_i + p_u . q_i``.

    ``forward`` takes ``(N, 2)`` int64 index pairs ``[user_index, item_index]`` and
    returns ``(N,)`` scores (predicted ratings for ``kind="explicit"``, preference scores
    for ``"implicit"``). Genre factors give a never-rated item a starting point.

    Args:
        user_ids: Raw user ids, in index order.
        item_ids: Raw item ids, in index order.
        factors: Latent dimension.
        kind: ``"explicit"`` (ratings) or ``"implicit"`` (interactions, BPR).
        genres: Genre names (columns of the ``item_genres`` buffer).
        n_seen: Number of stored training interactions.
        rating_range: Clamp of explicit predictions.
        hyper: The recommender's training settings (epochs, lr, reg, ...), kept so a
            loaded model can ``refit`` and fold in the way it was trained.
        algorithm: How it was trained (``"bayes"``, ``"sgd"``, ``"als"``, ``"bpr"``,
            ``"implicit-als"``; empty for models saved before the choice existed:
            ``"sgd"`` for explicit, ``"bpr"`` for implicit). For ``"bayes"`` the factors
            are the kept Gibbs samples side by side, scaled by ``1/sqrt(samples)``.
    """

    mean: torch.Tensor
    item_genres: torch.Tensor
    seen_users: torch.Tensor
    seen_items: torch.Tensor
    seen_ratings: torch.Tensor
    fitted_on: torch.Tensor

    def __init__(
        self,
        user_ids: list[int] | list[str],
        item_ids: list[int] | list[str],
        factors: int = 64,
        kind: str = "explicit",
        genres: list[str] | None = None,
        n_seen: int = 0,
        rating_range: list[float] | None = None,
        hyper: dict[str, float] | None = None,
        algorithm: str = "",
    ) -> None:
        super().__init__()
        nu, ni, ng = len(user_ids), len(item_ids), len(genres or [])
        self.user_ids: list[Any] = list(user_ids)
        self.item_ids: list[Any] = list(item_ids)
        self.kind, self.factors, self.genres = kind, factors, list(genres or [])
        self.rating_range = tuple(rating_range) if rating_range else None
        self.hyper = dict(hyper or {})
        self.algorithm = algorithm
        self.user_factors = nn.Parameter(torch.zeros(nu, factors))
        self.item_factors = nn.Parameter(torch.zeros(ni, factors))
        # biases are (n, 1) so training can read them as sparse embeddings like the factors
        self.user_bias = nn.Parameter(torch.zeros(nu, 1))
        self.item_bias = nn.Parameter(torch.zeros(ni, 1))
        self.genre_factors = nn.Parameter(torch.zeros(ng, factors))
        self.genre_bias = nn.Parameter(torch.zeros(ng))
        self.register_buffer("mean", torch.zeros(()))
        self.register_buffer("item_genres", torch.zeros(ni, ng))
        self.register_buffer("seen_users", torch.zeros(n_seen, dtype=torch.int64))
        self.register_buffer("seen_items", torch.zeros(n_seen, dtype=torch.int64))
        self.register_buffer("seen_ratings", torch.zeros(n_seen))
        self.register_buffer("fitted_on", torch.zeros((), dtype=torch.int64))  # rows at fit

    def forward(self, pairs: torch.Tensor) -> torch.Tensor:
        u, i = pairs[:, 0], pairs[:, 1]
        out = (self.user_factors[u] * self.item_factors[i]).sum(-1)
        out = out + self.item_bias[i, 0] + self.user_bias[u, 0] + self.mean
        if self.kind == "explicit" and self.rating_range is not None:
            out = out.clamp(*self.rating_range)
        return out

    def all_scores(self, users: torch.Tensor) -> torch.Tensor:
        """``(len(users), n_items)`` scores: one matrix product, for ranking."""
        scores = self.user_factors[users] @ self.item_factors.T + self.item_bias[:, 0]
        return scores + self.user_bias[users] + self.mean
