"""Recommenders on Lepton's own training and registry: ``lp.recommend.Recommender``.

Biased matrix factorization for explicit ratings, BPR for implicit feedback, a popularity
fallback for unknown users, genre factors for never-rated items, and ``partial_fit`` to
fold in new ratings, users and items without a full retrain. The whole state is one
``nn.Module`` (:class:`FactorModel`, registered as ``"recommender-mf"``), so
``lp.register(rec.model, "movies")`` stores it (safetensors + JSON manifest) and
:func:`load` brings it back.

Example:
    >>> import lepton as lp
    >>> ratings = lp.data.load("movielens", split="all")  # doctest: +SKIP
    >>> train, test = ratings.split(0.2, seed=0)  # doctest: +SKIP
    >>> rec = lp.recommend.Recommender(factors=64).fit(train)  # doctest: +SKIP
    >>> rec.recommend(1, k=5)  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

from lepton.recommend._metrics import coverage, mae, ranking_metrics, rmse
from lepton.recommend._model import FactorModel
from lepton.recommend._recommender import Recommender

__all__ = [
    "FactorModel",
    "Recommender",
    "coverage",
    "load",
    "mae",
    "ranking_metrics",
    "rmse",
]


def load(ref: str, **kwargs: Any) -> Recommender:
    """A registered recommender (``"name:3"``, ``"name@production"``, ``"name"``) as a
    :class:`Recommender`; the same as ``Recommender.from_model(lp.load_model(ref))``."""
    from lepton.registry import load_model

    return Recommender.from_model(load_model(ref, **kwargs))  # type: ignore[arg-type]
