"""Rating and ranking metrics, as small documented functions on NumPy arrays.

torchmetrics' retrieval metrics want a score per (query, document) pair including every
non-recommended item; a top-k list against a relevant set is what a recommender yields,
so these take exactly that. Definitions (binary relevance, ``k`` cut-off):

- precision@k = hits in the top k / k
- recall@k = hits in the top k / number of relevant items
- NDCG@k = sum over hits of 1/log2(rank + 1), divided by the same sum for an ideal list
  of min(k, relevant) hits
- MAP@k = mean over hits of precision at that hit's rank, divided by min(k, relevant)
- coverage = distinct items recommended to anyone / items in the catalog

A user with no relevant items in the test set is skipped by the ranking metrics.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

__all__ = ["coverage", "mae", "ranking_metrics", "rmse"]


def rmse(predicted: np.ndarray, actual: np.ndarray) -> float:
    """Root mean squared error."""
    return float(np.sqrt(np.mean((np.asarray(predicted) - np.asarray(actual)) ** 2)))


def mae(predicted: np.ndarray, actual: np.ndarray) -> float:
    """Mean absolute error."""
    return float(np.mean(np.abs(np.asarray(predicted) - np.asarray(actual))))


def _one(recommended: Sequence[object], relevant: set[object], k: int) -> tuple[float, ...]:
    top = list(recommended)[:k]
    hits = np.array([item in relevant for item in top], dtype=bool)
    ranks = np.flatnonzero(hits) + 1  # 1-based
    ideal = min(k, len(relevant))
    dcg = float(np.sum(1.0 / np.log2(ranks + 1)))
    idcg = float(np.sum(1.0 / np.log2(np.arange(1, ideal + 1) + 1)))
    ap = float(np.sum(np.arange(1, len(ranks) + 1) / ranks)) / ideal
    return len(ranks) / k, len(ranks) / len(relevant), dcg / idcg, ap


def ranking_metrics(
    recommended: Mapping[object, Sequence[object]],
    relevant: Mapping[object, Iterable[object]],
    k: int = 10,
) -> dict[str, float]:
    """Mean precision@k, recall@k, NDCG@k and MAP@k over users with relevant items."""
    rows = []
    for user, items in relevant.items():
        wanted = set(items)
        if wanted and user in recommended:
            rows.append(_one(recommended[user], wanted, k))
    if not rows:
        return {f"{m}@{k}": 0.0 for m in ("precision", "recall", "ndcg", "map")}
    mean = np.mean(np.array(rows), axis=0)
    return {
        f"precision@{k}": float(mean[0]),
        f"recall@{k}": float(mean[1]),
        f"ndcg@{k}": float(mean[2]),
        f"map@{k}": float(mean[3]),
    }


def coverage(recommended: Mapping[object, Sequence[object]], n_items: int) -> float:
    """Share of the catalog that appears in at least one list."""
    distinct = {item for items in recommended.values() for item in items}
    return len(distinct) / max(n_items, 1)
