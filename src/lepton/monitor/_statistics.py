"""The two-sample statistics behind :func:`lepton.monitor.drift`, each usable alone: PSI,
Kolmogorov-Smirnov, Wasserstein (in reference standard deviations), chi-square on counts,
and the maximum mean discrepancy with an RBF kernel and a permutation-test p-value (see
:mod:`lepton.monitor._drift` for how a report decides with them)."""

from __future__ import annotations

import math
from typing import Any, cast

import numpy as np
from scipy import stats as st

from lepton.errors import MonitorError, NotEnoughDataError

__all__ = [
    "DEFAULT_THRESHOLDS",
    "chi2_counts",
    "ks",
    "mmd",
    "psi",
    "wasserstein",
    "wasserstein_threshold",
]

_EPS = 1e-4  # PSI: the share given to an empty bin, so log(0) never happens
#: The thresholds of the statistics without a p-value (PSI's is the usual "significant
#: shift" rule; Wasserstein's is the floor of :func:`wasserstein_threshold`).
DEFAULT_THRESHOLDS = {"psi": 0.2, "wasserstein": 0.1}


# --- the statistics ------------------------------------------------------------------


def psi(reference: Any, current: Any, *, bins: int = 10, categorical: bool = False) -> float:
    """Population Stability Index of ``current`` against ``reference`` (1-D samples).

    ``sum((c - r) * ln(c / r))`` over bins, where ``r`` and ``c`` are the shares of each
    sample in the bin. Numeric bins are the reference's quantiles (``bins`` of them, fewer
    when values repeat), open at both ends; categorical bins are the categories seen in
    either sample. An empty bin counts as a share of 1e-4.

    Rule of thumb: < 0.1 no shift, 0.1-0.2 moderate, > 0.2 significant.
    """
    ref, cur = np.asarray(reference), np.asarray(current)
    r_counts: np.ndarray
    c_counts: np.ndarray
    if categorical:
        cats = np.unique(np.concatenate([ref.astype(str), cur.astype(str)]))
        r_counts = np.array([(ref.astype(str) == c).sum() for c in cats], dtype=np.float64)
        c_counts = np.array([(cur.astype(str) == c).sum() for c in cats], dtype=np.float64)
    else:
        ref, cur = ref.astype(np.float64), cur.astype(np.float64)
        if bins < 2:
            raise MonitorError(f"bins must be at least 2, got {bins}")
        inner = np.unique(np.quantile(ref, np.linspace(0, 1, bins + 1)[1:-1]))
        r_counts = np.bincount(np.searchsorted(inner, ref, side="right"), minlength=len(inner) + 1)
        c_counts = np.bincount(np.searchsorted(inner, cur, side="right"), minlength=len(inner) + 1)
        r_counts, c_counts = r_counts.astype(np.float64), c_counts.astype(np.float64)
    r = np.maximum(r_counts / max(r_counts.sum(), 1), _EPS)
    c = np.maximum(c_counts / max(c_counts.sum(), 1), _EPS)
    return float(np.sum((c - r) * np.log(c / r)))


def ks(reference: Any, current: Any) -> tuple[float, float]:
    """Two-sample Kolmogorov-Smirnov ``(statistic, p-value)`` (``scipy.stats.ks_2samp``)."""
    result = st.ks_2samp(np.asarray(reference, np.float64), np.asarray(current, np.float64))
    return float(result.statistic), float(result.pvalue)


def wasserstein(reference: Any, current: Any, *, normalize: bool = True) -> float:
    """Wasserstein-1 distance; divided by the reference's standard deviation when
    ``normalize`` (a constant reference is not divided)."""
    ref, cur = np.asarray(reference, np.float64), np.asarray(current, np.float64)
    distance = float(st.wasserstein_distance(ref, cur))
    scale = float(ref.std())
    return distance / scale if normalize and scale > 0 else distance


def chi2_counts(reference: np.ndarray, current: np.ndarray) -> tuple[float, float]:
    cats = np.unique(np.concatenate([reference, current]).astype(str))
    ref, cur = reference.astype(str), current.astype(str)
    table = np.array([[(ref == c).sum() for c in cats], [(cur == c).sum() for c in cats]])
    if table.shape[1] < 2:  # one category on both sides: identical distributions
        return 0.0, 1.0
    result = st.chi2_contingency(table)
    return float(result.statistic), float(result.pvalue)


def _sq_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    aa = np.einsum("ij,ij->i", a, a)[:, None]
    bb = np.einsum("ij,ij->i", b, b)[None, :]
    return cast(np.ndarray, np.maximum(aa + bb - 2.0 * (a @ b.T), 0.0))


def mmd(
    reference: Any,
    current: Any,
    *,
    permutations: int = 200,
    bandwidth: float | None = None,
    seed: int = 0,
) -> tuple[float, float, float]:
    """Maximum mean discrepancy between two samples of vectors, with a permutation test.

    The kernel is ``exp(-|x - y|^2 / (2 sigma^2))`` with ``sigma`` the median distance
    between the pooled samples (the median heuristic) unless ``bandwidth`` is given. The
    statistic is the unbiased estimate of MMD^2; the p-value is
    ``(1 + #{permuted >= observed}) / (1 + permutations)`` over random relabellings of
    the pooled sample (all permutations in one matrix product).

    Returns:
        ``(mmd2, p_value, sigma)``.
    """
    x = np.asarray(reference, np.float64)
    y = np.asarray(current, np.float64)
    x = x.reshape(len(x), -1)
    y = y.reshape(len(y), -1)
    n, m = len(x), len(y)
    if n < 2 or m < 2:
        raise NotEnoughDataError(
            f"MMD needs at least 2 samples on each side, got {n} and {m}; collect more rows"
        )
    if permutations < 1:
        raise MonitorError(f"permutations must be at least 1, got {permutations}")
    pooled = np.concatenate([x, y])
    d2 = _sq_distances(pooled, pooled)
    if bandwidth is None:
        upper = d2[np.triu_indices(len(pooled), k=1)]
        positive = upper[upper > 0]
        sigma = float(np.sqrt(np.median(positive))) if len(positive) else 1.0
    else:
        if bandwidth <= 0:
            raise MonitorError(f"bandwidth must be positive, got {bandwidth}")
        sigma = float(bandwidth)
    kernel = np.exp(-d2 / (2.0 * sigma * sigma))
    total = len(pooled)
    rng = np.random.default_rng(seed)
    labels = np.zeros((total, permutations + 1))
    labels[:n, 0] = 1.0  # column 0: the observed split
    for b in range(1, permutations + 1):
        labels[rng.permutation(total)[:n], b] = 1.0
    k_u = kernel @ labels
    row_sums = kernel.sum(axis=1)
    uku = np.einsum("ib,ib->b", labels, k_u)  # sum over X x X (diagonal included)
    uk1 = labels.T @ row_sums  # sum over X x all
    vkv = row_sums.sum() - 2.0 * uk1 + uku  # sum over Y x Y
    ukv = uk1 - uku  # sum over X x Y
    diag = 1.0  # k(x, x) of an RBF kernel
    stats = (
        (uku - n * diag) / (n * (n - 1)) + (vkv - m * diag) / (m * (m - 1)) - 2.0 * ukv / (n * m)
    )
    observed = float(stats[0])
    p_value = (1.0 + float(np.sum(stats[1:] >= observed))) / (1.0 + permutations)
    return observed, p_value, sigma


def wasserstein_threshold(n: int, m: int, *, alpha: float = 0.05, tests: int = 1) -> float:
    """The default Wasserstein threshold (in reference standard deviations) for ``n``
    reference and ``m`` current rows and ``tests`` features at family-wise level ``alpha``.

    Under no drift, ``sqrt(nm/(n+m))`` times the distance in reference standard
    deviations has a median near 1.2 and a near-normal upper tail of spread ~0.9 whatever
    the distribution (simulated on normal, uniform, exponential, log-normal, Poisson and
    Student-t data), so the threshold is that tail's ``1 - alpha/k`` quantile, and never
    below 0.1 sd (a shift too small to matter).

    Example:
        >>> round(wasserstein_threshold(285, 285, tests=30), 3)
        0.322
        >>> wasserstein_threshold(10**6, 10**6)
        0.1
    """
    z = float(st.norm.isf(alpha / max(tests, 1)))
    scaled = (1.2 + 0.9 * z) * math.sqrt(1 / max(n, 1) + 1 / max(m, 1))
    return max(DEFAULT_THRESHOLDS["wasserstein"], scaled)
