"""Two-sample drift tests and the :class:`DriftReport` they make.

Per numeric column: Kolmogorov-Smirnov (``scipy.stats.ks_2samp``), the Population
Stability Index and the Wasserstein distance (``scipy.stats.wasserstein_distance``,
divided by the reference's standard deviation so one threshold fits every scale). Per
categorical column: Pearson's chi-square on the 2 x K table of counts
(``scipy.stats.chi2_contingency``). Images and embeddings: the maximum mean discrepancy
with an RBF kernel (bandwidth by the median heuristic) and a permutation-test p-value.

The decision of a p-value test (ks, chi2, mmd) is Bonferroni-corrected: a feature drifts
when its p-value is below ``alpha / k`` for ``k`` tests in the report, so the report's
overall verdict (any feature drifted) is a level-``alpha`` test of "no drift at all".
PSI and Wasserstein have no p-value; they drift past a threshold (PSI 0.2, the usual
"significant shift" rule). A fixed Wasserstein threshold does not control false alarms:
two samples of ~300 rows of the same data differ by more than 0.1 sd in some of 30
features by chance alone (benchmarks/monitor.py: every null draw of breast cancer). So its
default is calibrated to the sample sizes and the number of features
(:func:`~lepton.monitor._statistics.wasserstein_threshold`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Sequence
from typing import Any, Literal

import numpy as np
from scipy import stats as st

from lepton.errors import (
    MonitorError,
    NotEnoughDataError,
    SchemaMismatchError,
    UnknownMethodError,
)
from lepton.monitor._inputs import Table, as_table, check_same_columns
from lepton.monitor._report import DriftReport, FeatureDrift
from lepton.monitor._statistics import (
    DEFAULT_THRESHOLDS,
    chi2_counts,
    ks,
    mmd,
    psi,
    wasserstein,
    wasserstein_threshold,
)

__all__ = [
    "DRIFT_METHODS",
    "DriftReport",
    "FeatureDrift",
    "Method",
    "drift",
    "ks",
    "mmd",
    "psi",
    "wasserstein",
]

Method = Literal["auto", "ks", "psi", "wasserstein", "chi2", "mmd"]
DRIFT_METHODS: tuple[str, ...] = ("auto", "ks", "psi", "wasserstein", "chi2", "mmd")
_P_VALUE_TESTS = ("ks", "chi2", "mmd")
# --- drift() -------------------------------------------------------------------------


def _finite(values: np.ndarray, name: str, what: str) -> np.ndarray:
    kept: np.ndarray = values[~np.isnan(values)]
    if len(kept) < 2:
        raise NotEnoughDataError(
            f"column {name!r} of the {what} has {len(kept)} non-missing values; at least 2 "
            f"are needed to compare distributions"
        )
    return kept


def _sample(matrix: np.ndarray, max_samples: int, rng: np.random.Generator) -> np.ndarray:
    if len(matrix) <= max_samples:
        return matrix
    return matrix[np.sort(rng.choice(len(matrix), max_samples, replace=False))]


def _ks_columns(
    columns: list[tuple[str, np.ndarray, np.ndarray]],
) -> dict[str, tuple[float, float]]:
    """KS of every column without missing values, in one vectorised scipy call (one call
    per column costs ~10 ms of overhead: 8 s for the 784 pixels of an MNIST image)."""
    complete = [
        (name, r, c) for name, r, c in columns if not (np.isnan(r).any() or np.isnan(c).any())
    ]
    if len(complete) < 2:
        return {}
    result = st.ks_2samp(
        np.column_stack([r for _, r, _ in complete]),
        np.column_stack([c for _, _, c in complete]),
        axis=0,
    )
    stats_, p_values = np.atleast_1d(result.statistic), np.atleast_1d(result.pvalue)
    return {name: (float(stats_[i]), float(p_values[i])) for i, (name, _, _) in enumerate(complete)}


def _numeric_scores(
    ref: np.ndarray, cur: np.ndarray, bins: int, known_ks: tuple[float, float] | None = None
) -> dict[str, float]:
    statistic, p_value = known_ks if known_ks is not None else ks(ref, cur)
    return {
        "ks": statistic,
        "ks_p_value": p_value,
        "psi": psi(ref, cur, bins=bins),
        "wasserstein": wasserstein(ref, cur),
    }


def _validate(method: str, alpha: float, threshold: float | None) -> None:
    if method not in DRIFT_METHODS:
        raise UnknownMethodError(
            f"no drift method {method!r}; use one of {', '.join(DRIFT_METHODS)}"
        )
    if not 0 < alpha < 1:
        raise MonitorError(f"alpha must be in (0, 1), got {alpha}; e.g. 0.05")
    if threshold is not None and (not math.isfinite(threshold) or threshold <= 0):
        raise MonitorError(f"threshold must be a positive number, got {threshold}")


def drift_tables(
    reference: Table,
    current: Table,
    *,
    method: str = "auto",
    alpha: float = 0.05,
    threshold: float | None = None,
    bins: int = 10,
    permutations: int = 200,
    max_samples: int = 1000,
    seed: int = 0,
) -> DriftReport:
    """:func:`drift` on tables already read (what windows reuse for their reference)."""
    _validate(method, alpha, threshold)
    check_same_columns(reference, current)
    if reference.rows < 2 or current.rows < 2:
        raise NotEnoughDataError(
            f"drift needs at least 2 rows on each side, got {reference.rows} reference and "
            f"{current.rows} current rows; use a larger window"
        )
    rng = np.random.default_rng(seed)
    # (name, kind, method, statistic, p_value, scores), decided once k is known
    pending: list[tuple[str, str, str, float, float | None, dict[str, float]]] = []
    if reference.matrix is not None and current.matrix is not None:
        if method not in ("auto", "mmd"):
            raise MonitorError(
                f"images and embeddings are compared with method='mmd' (or 'auto'), not "
                f"{method!r}; for per-column tests pass a 2-D table of features"
            )

        mmd2, p_value, sigma = mmd(
            _sample(reference.matrix, max_samples, rng),
            _sample(current.matrix, max_samples, rng),
            permutations=permutations,
            seed=seed,
        )
        scores = {"mmd2": mmd2, "mmd_p_value": p_value, "bandwidth": sigma}
        pending.append(("features", "embedding", "mmd", mmd2, p_value, scores))
    numeric = [
        (name, r, c)
        for name, r, c, kind in zip(
            reference.names, reference.columns, current.columns, reference.kinds, strict=True
        )
        if kind == "numeric" and method != "chi2"
    ]
    if method == "mmd" and numeric:
        ref_m = np.column_stack([r for _, r, _ in numeric])
        cur_m = np.column_stack([c for _, _, c in numeric])
        ref_m = ref_m[~np.isnan(ref_m).any(axis=1)]
        cur_m = cur_m[~np.isnan(cur_m).any(axis=1)]
        mmd2, p_value, sigma = mmd(
            _sample(ref_m, max_samples, rng),
            _sample(cur_m, max_samples, rng),
            permutations=permutations,
            seed=seed,
        )
        scores = {"mmd2": mmd2, "mmd_p_value": p_value, "bandwidth": sigma}
        pending.append(("features", "embedding", "mmd", mmd2, p_value, scores))
        numeric = []
    numeric_method = "ks" if method in ("auto", "ks", "mmd") else method
    ks_all = _ks_columns(numeric)
    for name, r, c in numeric:
        scores = _numeric_scores(
            _finite(r, name, "reference"), _finite(c, name, "current"), bins, ks_all.get(name)
        )
        p = scores["ks_p_value"] if numeric_method == "ks" else None
        pending.append((name, "numeric", numeric_method, scores[numeric_method], p, scores))
    for name, r, c, kind in zip(
        reference.names, reference.columns, current.columns, reference.kinds, strict=True
    ):
        if kind == "numeric" and method != "chi2":
            continue
        ref_c = np.asarray(r).astype(str)
        cur_c = np.asarray(c).astype(str)
        statistic, p_value = chi2_counts(ref_c, cur_c)
        scores = {
            "chi2": statistic,
            "chi2_p_value": p_value,
            "psi": psi(ref_c, cur_c, categorical=True),
        }
        pending.append((name, "categorical", "chi2", statistic, p_value, scores))
    tests = sum(1 for item in pending if item[2] in _P_VALUE_TESTS)
    level = alpha / max(tests, 1)
    w_tests = sum(1 for item in pending if item[2] == "wasserstein")
    features = []
    for f_name, f_kind, test, f_stat, f_p, f_scores in pending:
        if test in _P_VALUE_TESTS:
            assert f_p is not None
            limit, drifted = level, f_p < level
        else:
            if threshold is not None:
                limit = threshold
            elif test == "wasserstein":
                limit = wasserstein_threshold(
                    reference.rows, current.rows, alpha=alpha, tests=w_tests
                )
            else:
                limit = DEFAULT_THRESHOLDS[test]
            drifted = f_stat >= limit
        features.append(
            FeatureDrift(f_name, f_kind, test, float(f_stat), f_p, limit, bool(drifted), f_scores)
        )
    return DriftReport(
        features=tuple(features),
        drifted=any(f.drifted for f in features),
        alpha=alpha,
        reference_rows=reference.rows,
        current_rows=current.rows,
    )


def embed_table(table: Table, embed: Callable[[np.ndarray], Any] | None) -> Table:
    """The table with its image/embedding matrix (or its numeric columns) passed through
    ``embed``, a function from a batch ``(n, ...)`` to features ``(n, d)``."""
    if embed is None:
        return table
    if table.matrix is not None:
        batch = table.matrix.reshape((table.rows, *table.sample_shape))
    else:
        batch = np.column_stack(
            [c for c, k in zip(table.columns, table.kinds, strict=True) if k == "numeric"]
        )
    out = embed(batch)
    if hasattr(out, "detach"):
        out = out.detach().cpu().numpy()
    features = np.asarray(out, np.float64)
    if features.ndim < 2 or len(features) != table.rows:
        raise MonitorError(
            f"embed returned shape {features.shape} for {table.rows} rows; it must map a "
            f"batch of n samples to an (n, d) array"
        )
    features = features.reshape(table.rows, -1)
    keep = [i for i, k in enumerate(table.kinds) if k == "categorical" or table.matrix is not None]
    return Table(
        tuple(table.names[i] for i in keep),
        tuple(table.columns[i] for i in keep),
        tuple(table.kinds[i] for i in keep),
        features,
        (features.shape[1],),
        table.rows,
    )


def drift(
    reference: Any,
    current: Any,
    *,
    method: Method = "auto",
    alpha: float = 0.05,
    threshold: float | None = None,
    categorical: Collection[str] = (),
    columns: Sequence[str] | None = None,
    targets: bool = False,
    embed: Callable[[np.ndarray], Any] | None = None,
    bins: int = 10,
    permutations: int = 200,
    max_samples: int = 1000,
    seed: int = 0,
) -> DriftReport:
    """Compare ``current`` with ``reference``, feature by feature.

    Args:
        reference: The data the model was trained on (or any baseline): a lepton
            ``Dataset``, a NumPy array or torch tensor (2-D: one column per feature; more
            dimensions: images), a pandas ``DataFrame``, a dict of columns or a list of
            row dicts.
        current: The data to check, in the same layout.
        method: ``"auto"`` (KS per numeric column, chi-square per categorical one, MMD for
            images/embeddings), or one test for every numeric column: ``"ks"``,
            ``"psi"``, ``"wasserstein"``, ``"mmd"`` (all numeric columns together, as one
            vector) or ``"chi2"`` (every column as categories).
        alpha: Family-wise level of the p-value tests (Bonferroni over the features).
        threshold: Threshold of ``psi`` (default 0.2) or ``wasserstein`` (default:
            :func:`wasserstein_threshold` of the sample sizes, at least 0.1 reference
            standard deviations).
        categorical: Column names to treat as categories (strings and booleans always are).
        columns: Compare only these columns.
        targets: Also compare a ``Dataset``'s targets (as the column ``target``).
        embed: A function from a batch of samples ``(n, ...)`` to features ``(n, d)``
            (e.g. a model's penultimate layer); the MMD test then runs on those features.
        bins: Quantile bins of the PSI.
        permutations: Permutations of the MMD test.
        max_samples: Rows per side used by the MMD (a seeded random subset past it).
        seed: Seed of the subsets and permutations.

    Raises:
        SchemaMismatchError: The two samples have different columns.
        NotEnoughDataError: A side has fewer than 2 rows.
        UnknownMethodError: ``method`` is not one of the above.

    Example:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> report = drift(rng.normal(size=(500, 2)), rng.normal(1, 1, size=(500, 2)))
        >>> report.drifted, report.drifted_features
        (True, ['x0', 'x1'])
    """
    _validate(method, alpha, threshold)
    ref = embed_table(
        as_table(reference, categorical=categorical, targets=targets, what="reference"), embed
    )
    cur = embed_table(
        as_table(current, categorical=categorical, targets=targets, what="current"), embed
    )
    if columns is not None:
        ref, cur = (
            select_columns(ref, columns, "reference"),
            select_columns(cur, columns, "current"),
        )
    return drift_tables(
        ref,
        cur,
        method=method,
        alpha=alpha,
        threshold=threshold,
        bins=bins,
        permutations=permutations,
        max_samples=max_samples,
        seed=seed,
    )


def select_columns(table: Table, columns: Sequence[str], what: str) -> Table:
    """Only ``columns`` of ``table``, in that order."""
    missing = [c for c in columns if c not in table.names]
    if missing:
        raise SchemaMismatchError(f"the {what} has no column {missing}; it has {list(table.names)}")
    index = [table.names.index(c) for c in columns]
    return Table(
        tuple(table.names[i] for i in index),
        tuple(table.columns[i] for i in index),
        tuple(table.kinds[i] for i in index),
        None,
        (),
        table.rows,
    )
