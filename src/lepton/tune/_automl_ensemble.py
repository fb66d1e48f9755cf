"""Ensemble selection over the search's trials (Caruana et al., ICML 2004).

Every complete trial left its predictions on the validation rows of every fold.

1. Each family sends one candidate, by the *one-standard-error rule* (Breiman et al.,
   1984; Hastie et al., *Elements of Statistical Learning*, 7.10): its simplest
   configuration (``Family.complexity``) whose score is within one standard error of
   the family's best. The best of many noisy scores is biased upwards; among those the
   folds cannot tell apart, the simplest generalizes best. The standard error of an
   accuracy is binomial (Agresti-Coull, so that 100% on a few rows is not certainty);
   of other metrics, the folds' spread.
2. Starting from nothing, each step adds (with replacement) the candidate whose addition
   makes the averaged predictions score best; after ``STEPS`` steps the best prefix wins,
   and a candidate's weight is how often it was added. On small data the metric is
   coarse (accuracy moves one row at a time), so ties are broken by a smooth, proper
   score: log-loss for classes, squared error for values.

The chosen ensemble's validation score is optimistic (it was selected on those rows), as
is any best-of-many score; the held-out test score is the honest one.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from lepton.tune._automl_data import Metric, metric_value
from lepton.tune._automl_leaderboard import TrialRow

__all__ = ["STEPS", "Member", "select_ensemble", "standard_error"]

STEPS = 25
Matrix = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Member:
    """One trial in the ensemble and its weight (weights sum to 1)."""

    trial: TrialRow
    weight: float


def _key(metric: Metric, y: npt.NDArray[Any], p: Matrix, classify: bool) -> tuple[float, float]:
    """(metric, tie-breaker), both greater-is-better."""
    if classify:
        rows = np.arange(len(y))
        smooth = float(np.mean(np.log(np.clip(p[rows, y], 1e-15, 1.0))))
    else:
        smooth = -float(np.mean((y - p) ** 2))
    return metric_value(metric, y, p), smooth


def standard_error(row: TrialRow, metric: Metric, rows: int) -> float:
    """Standard error of ``row``'s score, measured on ``rows`` validation rows."""
    if metric.name in ("accuracy", "balanced_accuracy"):
        p = (row.score * rows + 2) / (rows + 4)  # Agresti-Coull
        return math.sqrt(p * (1 - p) / (rows + 4))
    return row.std / math.sqrt(max(row.folds, 1))


def select_ensemble(
    rows: list[TrialRow],
    predictions: dict[int, Matrix],
    y: npt.NDArray[Any],
    metric: Metric,
    classify: bool,
    complexity: Callable[[TrialRow], float],
) -> tuple[list[Member], tuple[float, float]]:
    """Greedy ensemble selection; returns the members and the ensemble's (score, tie-break).

    Args:
        rows: The completed trials.
        predictions: Each trial's validation predictions, by trial number.
        y: The targets of the validation rows, in the predictions' order.
        metric: The search's metric.
        classify: Whether predictions are class probabilities.
        complexity: How much a trial's configuration can fit.
    """
    done = sorted((r for r in rows if r.number in predictions), key=lambda r: -r.score)
    pool: dict[int, TrialRow] = {}
    for family in dict.fromkeys(r.family for r in done):
        trials = [r for r in done if r.family == family]
        floor = trials[0].score - standard_error(trials[0], metric, len(y))
        simplest = min((r for r in trials if r.score >= floor), key=complexity)
        pool[simplest.number] = simplest
    total: Matrix | None = None
    counts: Counter[int] = Counter()
    best: tuple[tuple[float, float], Counter[int]] | None = None
    for step in range(1, STEPS + 1):
        choice, choice_key = None, None
        for number in pool:
            p = predictions[number] if total is None else total + predictions[number]
            key = _key(metric, y, p / step, classify)
            if choice_key is None or key > choice_key:
                choice, choice_key = number, key
        assert choice is not None
        assert choice_key is not None
        counts[choice] += 1
        added = predictions[choice]
        total = added.copy() if total is None else total + added
        if best is None or choice_key > best[0]:
            best = (choice_key, counts.copy())
    assert best is not None
    key, chosen = best
    size = sum(chosen.values())
    members = [Member(pool[n], c / size) for n, c in chosen.most_common()]
    return members, key
