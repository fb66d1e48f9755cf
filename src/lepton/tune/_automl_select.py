"""Feature selection by three methods that vote, and the report of what each said.

On (a stratified sample of at most ``SAMPLE_ROWS``) preprocessed training rows:

1. **mutual information** with the target (scikit-learn's k-NN estimator): votes *keep*
   when it exceeds 0.01 nats and 2% of the best feature's;
2. **L1**: a sparse logistic (classification, saga) or lasso (regression) model, its
   strength picked by 3-fold cross-validation: votes *keep* for a non-zero coefficient;
3. **permutation importance** of a gradient-boosted model on a held-out quarter of the
   sample (5 shuffles): votes *keep* when the mean drop in score exceeds its std.

A feature is kept with at least two votes. A method that runs out of its share of the
time budget is skipped (and reported); it then votes *keep* for every feature, so
selection only removes what the methods that ran agree on. The search still checks the
result: when features were dropped, each family's trials may use all features instead
(a searched choice), so a harmful selection loses in cross-validation.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["FeatureReport", "select_features"]

SAMPLE_ROWS = 2000
REPEATS = 5  # shuffles per feature for permutation importance
Matrix = npt.NDArray[np.float64]


@dataclass
class FeatureReport:
    """What feature selection kept, and why.

    Attributes:
        kept: Names of the kept features (after preprocessing), in pipeline order.
        dropped: Names of the dropped ones.
        mutual_information: Mutual information with the target, in nats.
        l1: Largest absolute L1 coefficient (standardized features).
        permutation: Mean and std of the score drop when the feature is shuffled.
        votes: How many of the three methods voted to keep each feature.
        columns: How each raw column was preprocessed.
        notes: Methods skipped, and why.
    """

    kept: list[str]
    dropped: list[str]
    mutual_information: dict[str, float] = field(default_factory=dict)
    l1: dict[str, float] = field(default_factory=dict)
    permutation: dict[str, tuple[float, float]] = field(default_factory=dict)
    votes: dict[str, int] = field(default_factory=dict)
    columns: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def table(self, limit: int | None = 30) -> Any:
        """A rich ``Table``: one row per feature, the strongest (by votes, then MI) first."""
        from rich.table import Table

        table = Table(title=f"features: {len(self.kept)} kept, {len(self.dropped)} dropped",
                      title_justify="left")  # fmt: skip
        for column in ("feature", "kept", "mutual info", "L1 |coef|", "permutation"):
            table.add_column(column, justify="left" if column == "feature" else "right")
        order = sorted(
            self.votes, key=lambda n: (-self.votes[n], -self.mutual_information.get(n, 0))
        )
        for name in order[:limit]:
            mi, l1, perm = (self.mutual_information.get(name), self.l1.get(name),
                            self.permutation.get(name))  # fmt: skip
            table.add_row(
                name,
                "yes" if name in self.kept else "no",
                "-" if mi is None else f"{mi:.3f}",
                "-" if l1 is None else f"{l1:.3f}",
                "-" if perm is None else f"{perm[0]:.4f} ± {perm[1]:.4f}",
            )
        return table

    def __repr__(self) -> str:
        shown = ", ".join(self.kept[:8]) + (", ..." if len(self.kept) > 8 else "")
        gone = ", ".join(self.dropped[:8]) + (", ..." if len(self.dropped) > 8 else "")
        notes = f"; {'; '.join(self.notes)}" if self.notes else ""
        return (
            f"FeatureReport(kept {len(self.kept)}: [{shown}], dropped {len(self.dropped)}: "
            f"[{gone}]{notes})"
        )


def _sample(n: int, y: npt.NDArray[Any], classify: bool, seed: int) -> npt.NDArray[np.int64]:
    if n <= SAMPLE_ROWS:
        return np.arange(n)
    from sklearn.model_selection import train_test_split

    rows, _ = train_test_split(
        np.arange(n), train_size=SAMPLE_ROWS, random_state=seed, stratify=y if classify else None
    )
    return np.sort(rows)


def _l1_scores(
    z: Matrix, y: npt.NDArray[Any], classify: bool, seed: int, until: float
) -> Matrix | None:
    import sklearn
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import Lasso, LogisticRegression
    from sklearn.model_selection import cross_val_score

    modern = tuple(int(p) for p in sklearn.__version__.split(".")[:2]) >= (1, 8)

    def make(strength: float) -> Any:
        if not classify:
            return Lasso(alpha=strength, max_iter=2000)
        sparse = {"l1_ratio": 1.0} if modern else {"penalty": "l1"}
        return LogisticRegression(C=strength, solver="saga", max_iter=300, tol=1e-3,
                                  random_state=seed, **sparse)  # fmt: skip

    grid = [0.01, 0.1, 1.0] if classify else [0.1, 0.03, 0.01]  # C, or lasso's alpha
    if not classify:  # on a standardized target, so alpha means the same for every task
        y = (y - y.mean()) / (y.std() or 1.0)
    scores: list[float] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for strength in grid:  # the strengths that fit in the time, strongest first
            if scores and time.perf_counter() > until:
                break
            scores.append(float(cross_val_score(make(strength), z, y, cv=3).mean()))
        if time.perf_counter() > until:
            return None
        model = make(grid[int(np.nanargmax(scores))]).fit(z, y)
    return np.abs(np.atleast_2d(model.coef_)).max(axis=0)  # type: ignore[no-any-return]


def _permutation(
    z: Matrix, y: npt.NDArray[Any], classify: bool, seed: int, until: float
) -> tuple[Matrix, Matrix] | None:
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    from sklearn.inspection import permutation_importance
    from sklearn.model_selection import train_test_split

    fit_rows, held_rows = train_test_split(
        np.arange(len(y)), test_size=0.25, random_state=seed, stratify=y if classify else None
    )
    model_type = HistGradientBoostingClassifier if classify else HistGradientBoostingRegressor
    model = model_type(max_iter=30, random_state=seed).fit(z[fit_rows], y[fit_rows])
    began = time.perf_counter()
    model.score(z[held_rows], y[held_rows])
    if time.perf_counter() + (time.perf_counter() - began) * REPEATS * z.shape[1] > until:
        return None  # one score per feature and shuffle would not fit
    result = permutation_importance(model, z[held_rows], y[held_rows], n_repeats=REPEATS,
                                    random_state=seed, n_jobs=1)  # fmt: skip
    return result.importances_mean, result.importances_std


def select_features(
    z: Matrix,
    y: npt.NDArray[Any],
    names: list[str],
    *,
    classify: bool,
    seed: int,
    until: float,
    n_jobs: int = 1,
) -> tuple[list[int], FeatureReport]:
    """Vote on the columns of ``z``; return the kept indices and the report.

    Args:
        z: Preprocessed training features ``(N, p)``.
        y: Class indices or values ``(N,)``.
        names: One name per column of ``z``.
        classify: Whether ``y`` holds classes.
        seed: Seeds the sampling, the estimators and the shuffles.
        until: ``time.perf_counter()`` value after which no further method starts (L1
            also stops between its strengths; permutation importance does not start when
            its estimated cost would pass it).
        n_jobs: Threads for the methods that take them.
    """
    from sklearn.feature_selection import mutual_info_classif, mutual_info_regression

    rows = _sample(len(y), y, classify, seed)
    zs, ys = z[rows], y[rows]
    votes = np.zeros(z.shape[1], dtype=np.int64)
    report = FeatureReport(kept=[], dropped=[])
    skipped = []

    def time_left() -> bool:
        return time.perf_counter() < until

    mi_fn = mutual_info_classif if classify else mutual_info_regression
    mi = mi_fn(zs, ys, random_state=seed, n_jobs=n_jobs)
    votes += (mi > 0.01) & (mi >= 0.02 * mi.max())
    report.mutual_information = {n: float(v) for n, v in zip(names, mi, strict=True)}
    l1 = _l1_scores(zs, ys, classify, seed, until) if time_left() else None
    if l1 is not None:
        votes += l1 > 1e-8
        report.l1 = {n: float(v) for n, v in zip(names, l1, strict=True)}
    else:
        skipped.append("L1")
        votes += 1
    permuted = _permutation(zs, ys, classify, seed, until) if time_left() else None
    if permuted is not None:
        mean, std = permuted
        votes += mean > std
        report.permutation = {
            n: (float(m), float(s)) for n, m, s in zip(names, mean, std, strict=True)
        }
    else:
        skipped.append("permutation importance")
        votes += 1
    if skipped:
        report.notes.append(f"{' and '.join(skipped)} skipped: out of the selection time")
    kept = [i for i in range(z.shape[1]) if votes[i] >= 2]
    if not kept:  # never leave the models nothing: keep the most informative feature
        kept = [int(np.argmax(mi))]
        report.notes.append("no feature had two votes: kept the one with the most MI")
    report.kept = [names[i] for i in kept]
    report.dropped = [n for i, n in enumerate(names) if i not in set(kept)]
    report.votes = {n: int(v) for n, v in zip(names, votes, strict=True)}
    return kept, report
