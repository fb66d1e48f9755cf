"""Anomaly and change detection, streaming and batch, behind one class.

- ``mad`` (streaming and batch): the robust z-score ``0.6745 |x - median| / MAD``
  (Iglewicz and Hoaglin), over a rolling window when streaming.
- ``hst`` (streaming): river's ``HalfSpaceTrees`` (Tan et al. 2011), inputs min-max
  scaled as they come.
- ``adwin``, ``page_hinkley`` (streaming): river's change detectors (a shift in the mean).
- ``isolation_forest`` (batch, then per row): scikit-learn's ``IsolationForest``.
- ``discord`` (batch, on a series): matrix-profile discords, the distance of every
  subsequence to its nearest non-trivial neighbour.

Scores grow with how anomalous a point is; an alarm is a score past the threshold (for the
change detectors, the score is 1 at a detected change and 0 elsewhere).

The matrix profile is computed here, in NumPy (exact, z-normalised Euclidean distance,
STOMP's diagonal recurrence, exclusion zone ``ceil(m / 4)`` as in STUMPY). STUMPY is the
maintained library for it, but it compiles with numba on first use: 3.5-4.5 minutes per
process on this project's 2-core machines (measured), which no test or short benchmark
can afford; our result is checked against a brute-force profile in the tests.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Any, Literal, cast

import numpy as np

from lepton.errors import MissingExtraError, MonitorError, NotEnoughDataError, UnknownMethodError

__all__ = [
    "DETECTORS",
    "Anomaly",
    "AnomalyDetector",
    "DetectorMethod",
    "matrix_profile",
    "subsequences",
]

DetectorMethod = Literal["mad", "hst", "adwin", "page_hinkley", "isolation_forest", "discord"]
DETECTORS: tuple[str, ...] = (
    "mad",
    "hst",
    "adwin",
    "page_hinkley",
    "isolation_forest",
    "discord",
)
_STREAMING = ("mad", "hst", "adwin", "page_hinkley")
_DEFAULT_THRESHOLD = {"mad": 3.5, "adwin": 0.5, "page_hinkley": 0.5}
_HST_QUANTILE = 0.999
_RIVER_HOW = "pip install 'lepton[monitor]' (or pip install 'river>=0.26')"
_TINY = 1e-8


@dataclass(frozen=True)
class Anomaly:
    """The verdict on one streamed value: its ``score``, whether it raised an ``alarm``,
    and its ``index`` in the stream (from 0)."""

    index: int
    score: float
    alarm: bool


def subsequences(series: Any, length: int) -> np.ndarray:
    """Every subsequence of ``length`` consecutive points of a 1-D series, as rows
    ``(n - length + 1, length)`` (a read-only view, no copy)."""
    values = np.asarray(series, np.float64)
    if values.ndim != 1:
        raise MonitorError(f"a series must be 1-D, got shape {values.shape}")
    if not 2 <= length <= len(values):
        raise NotEnoughDataError(
            f"subsequences of length {length} need a series of at least that many points "
            f"(got {len(values)}) and a length of at least 2"
        )
    return np.lib.stride_tricks.sliding_window_view(values, length)


# --- matrix profile --------------------------------------------------------------------


def _moments(t: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
    c1 = np.concatenate([[0.0], np.cumsum(t)])
    c2 = np.concatenate([[0.0], np.cumsum(t * t)])
    mu = (c1[m:] - c1[:-m]) / m
    sigma = np.sqrt(np.maximum((c2[m:] - c2[:-m]) / m - mu * mu, 0.0))
    return mu, sigma


def _distance(
    qt: np.ndarray, m: int, mu_a: np.ndarray, sd_a: np.ndarray, mu_b: np.ndarray, sd_b: np.ndarray
) -> np.ndarray:
    const_a, const_b = sd_a <= _TINY, sd_b <= _TINY
    denom = np.where(const_a | const_b, 1.0, m * sd_a * sd_b)
    corr = np.clip((qt - m * mu_a * mu_b) / denom, -1.0, 1.0)
    # STUMPY's convention: two flat subsequences are identical, a flat and a varying one
    # are sqrt(m) apart.
    corr = np.where(const_a & const_b, 1.0, np.where(const_a | const_b, 0.5, corr))
    return np.sqrt(np.maximum(2.0 * m * (1.0 - corr), 0.0))


def _window_sums(products: np.ndarray, m: int) -> np.ndarray:
    c = np.concatenate([[0.0], np.cumsum(products)])
    return cast(np.ndarray, c[m:] - c[:-m])


def matrix_profile(series: Any, m: int, reference: Any | None = None) -> np.ndarray:
    """The matrix profile of ``series``: for each subsequence of length ``m``, the
    z-normalised Euclidean distance to its nearest neighbour.

    Without ``reference`` it is a self-join (neighbours closer than ``ceil(m / 4)``
    points are trivial matches and skipped); with one, the neighbour is looked for in
    ``reference`` (an AB-join). Flat subsequences follow STUMPY's convention.

    Returns:
        ``(len(series) - m + 1,)`` distances; the largest is the top discord.
    """
    a = np.asarray(series, np.float64)
    if a.ndim != 1 or len(a) < m or m < 3 or not np.isfinite(a).all():
        raise NotEnoughDataError(
            f"a matrix profile needs a finite 1-D series of at least m={m} points (m >= 3), "
            f"got shape {a.shape}; lower window= or pass more points"
        )
    center, scale = float(a.mean()), float(a.std()) or 1.0
    a = (a - center) / scale  # z-normalised distances do not change; sums stay small
    mu_a, sd_a = _moments(a, m)
    la = len(a) - m + 1
    profile = np.full(la, np.inf)
    if reference is None:
        excl = math.ceil(m / 4)
        for k in range(excl, la):
            qt = _window_sums(a[: len(a) - k] * a[k:], m)
            d = _distance(qt, m, mu_a[: la - k], sd_a[: la - k], mu_a[k:], sd_a[k:])
            np.minimum(profile[: la - k], d, out=profile[: la - k])
            np.minimum(profile[k:], d, out=profile[k:])
        return profile
    b = (np.asarray(reference, np.float64) - center) / scale
    if b.ndim != 1 or len(b) < m or not np.isfinite(b).all():
        raise NotEnoughDataError(
            f"the reference series must be finite, 1-D and at least m={m} points long, got "
            f"shape {b.shape}"
        )
    mu_b, sd_b = _moments(b, m)
    lb = len(b) - m + 1
    for k in range(-(la - 1), lb):  # pairs (i, j = i + k)
        i0 = max(0, -k)
        length = min(len(a) - i0, len(b) - (i0 + k))
        if length < m:
            continue
        qt = _window_sums(a[i0 : i0 + length] * b[i0 + k : i0 + k + length], m)
        count = len(qt)
        d = _distance(
            qt,
            m,
            mu_a[i0 : i0 + count],
            sd_a[i0 : i0 + count],
            mu_b[i0 + k : i0 + k + count],
            sd_b[i0 + k : i0 + k + count],
        )
        np.minimum(profile[i0 : i0 + count], d, out=profile[i0 : i0 + count])
    return profile


# --- the detector ----------------------------------------------------------------------


def _robust_z(x: np.ndarray, median: np.ndarray, mad: np.ndarray, spread: np.ndarray) -> Any:
    # MAD of 0 (over half the values equal): fall back to the mean absolute deviation
    # (scaled to agree with the MAD on normal data), then to "anything else is infinite".
    scale = np.where(mad > 0, mad / 0.6745, np.where(spread > 0, spread * 1.2533, 0.0))
    dev = np.abs(x - median)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(scale > 0, dev / np.where(scale > 0, scale, 1.0), np.where(dev > 0, np.inf, 0))
    return z


def _mad_stats(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    median = np.median(values, axis=0)
    dev = np.abs(values - median)
    return median, np.median(dev, axis=0), dev.mean(axis=0)


def _river() -> Any:
    try:
        import river
        import river.anomaly
        import river.compose
        import river.drift
        import river.preprocessing
        import river.stats
    except ImportError:
        raise MissingExtraError(f"this detector needs river: {_RIVER_HOW}") from None
    return river


class AnomalyDetector:
    """One interface to streaming and batch anomaly detectors.

    Args:
        method: One of :data:`DETECTORS` (see the module docstring).
        threshold: The score past which a value raises an alarm (``mad``: 3.5 robust
            z-scores; ``hst``: by default the running 99.9% quantile of its own past
            scores, since HST's scores sit near 0.9 on normal data and their spread depends
            on the stream; ``isolation_forest``: the forest's own offset, i.e.
            ``-score_samples > 0.5``; ``discord``: none, read :meth:`score` or
            :meth:`top`).
        window: ``mad``: values in the rolling window (default 500); ``hst``: its
            reference window (default 250); ``discord``: the subsequence length ``m``
            (default 100).
        min_samples: Streamed values seen before the first alarm (default 30).
        seed: Seed of the randomised detectors.
        **params: Passed to the underlying detector (``delta=`` of ADWIN, ``n_trees=`` of
            HST, ``n_estimators=`` of the forest, ...).

    Example:
        >>> det = AnomalyDetector("mad")
        >>> alarms = [det.update(v).alarm for v in [10.0, 10.2, 9.9, 10.1] * 10 + [30.0]]
        >>> alarms[-1], any(alarms[:-1])
        (True, False)
    """

    def __init__(
        self,
        method: DetectorMethod = "mad",
        *,
        threshold: float | None = None,
        window: int | None = None,
        min_samples: int = 30,
        seed: int = 0,
        **params: Any,
    ) -> None:
        if method not in DETECTORS:
            raise UnknownMethodError(
                f"no anomaly detector {method!r}; use one of {', '.join(DETECTORS)}"
            )
        if window is not None and window < 2:
            raise MonitorError(f"window must be at least 2, got {window}")
        if min_samples < 0:
            raise MonitorError(f"min_samples must be >= 0, got {min_samples}")
        self.method = method
        self.threshold = threshold if threshold is not None else _DEFAULT_THRESHOLD.get(method)
        self.window = window or {"mad": 500, "hst": 250, "discord": 100}.get(method, 0)
        self.min_samples = min_samples
        self.seed = seed
        self.params = params
        self.seen = 0
        self._fitted = False
        self._buffer: deque[np.ndarray] = deque(maxlen=self.window or None)
        self._model: Any = None
        self._stats: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self._reference: np.ndarray | None = None
        self._width: int | None = None
        self._quantile: Any = None
        if method in ("hst", "adwin", "page_hinkley"):
            self._model = self._river_model()
        if method == "hst" and threshold is None:
            self._quantile = _river().stats.Quantile(_HST_QUANTILE)

    @property
    def streaming(self) -> bool:
        """Whether :meth:`update` learns from each value (else it only scores it)."""
        return self.method in _STREAMING

    def __repr__(self) -> str:
        return f"AnomalyDetector({self.method!r}, threshold={self.threshold}, window={self.window})"

    # -- building ------------------------------------------------------------------------
    def _river_model(self) -> Any:
        river = _river()
        if self.method == "adwin":
            return river.drift.ADWIN(**self.params)
        if self.method == "page_hinkley":
            return river.drift.PageHinkley(**self.params)
        hst = river.anomaly.HalfSpaceTrees(window_size=self.window, seed=self.seed, **self.params)
        return river.compose.Pipeline(river.preprocessing.MinMaxScaler(), hst)

    def _row(self, x: Any) -> np.ndarray:
        row = np.atleast_1d(np.asarray(x, np.float64)).ravel()
        if self._width is None:
            self._width = len(row)
        elif len(row) != self._width:
            raise MonitorError(
                f"this detector was given rows of {self._width} values and now {len(row)}; "
                f"send rows of one width"
            )
        if self.method in ("adwin", "page_hinkley") and len(row) != 1:
            raise MonitorError(
                f"{self.method} watches one number at a time (a metric), got {len(row)} values; "
                f"use 'mad' or 'hst' for rows, or one detector per metric"
            )
        return row

    # -- streaming -----------------------------------------------------------------------
    def update(self, x: Any) -> Anomaly:
        """Score one value (a number or a row), then learn from it (streaming methods).

        Batch methods (``isolation_forest``) score it with what :meth:`fit` learned.
        """
        row = self._row(x)
        index = self.seen
        self.seen += 1
        if self.method == "mad":
            if len(self._buffer) >= max(self.min_samples, 2):
                values = np.stack(list(self._buffer))
                score = float(np.max(_robust_z(row, *_mad_stats(values))))
            elif self._stats is not None:
                score = float(np.max(_robust_z(row, *self._stats)))
            else:
                score = 0.0
            self._buffer.append(row)
        elif self.method == "hst":
            features = {i: float(v) for i, v in enumerate(row)}
            score = float(self._model.score_one(features))
            self._model.learn_one(features)
            if self.seen <= max(self.min_samples, self.window) and not self._fitted:
                score = 0.0  # HST scores nothing until its first window is full
            elif self._quantile is not None:
                limit = self._quantile.get()
                self._quantile.update(score)
                alarm = limit is not None and self.seen > 2 * self.window and score > limit
                return Anomaly(index=index, score=score, alarm=bool(alarm))
        elif self.method in ("adwin", "page_hinkley"):
            self._model.update(float(row[0]))
            score = 1.0 if self._model.drift_detected else 0.0
        elif self.method == "isolation_forest":
            if self._model is None:
                raise MonitorError(
                    "isolation_forest is a batch detector: call fit(X) on normal data first, "
                    "then update(x) scores each new row (use 'mad' or 'hst' to learn as you go)"
                )
            score = float(-self._model.score_samples(row[None, :])[0])
        else:
            raise MonitorError(
                "discord scores whole series, not single values: use score(series) or "
                "top(series); for a stream use 'mad', 'hst', 'adwin' or 'page_hinkley'"
            )
        warm = index >= self.min_samples or self._fitted
        limit = self.threshold
        if limit is None and self.method == "isolation_forest":
            limit = float(-self._model.offset_)
        alarm = bool(warm and limit is not None and score > limit)
        if self.method in ("adwin", "page_hinkley"):
            alarm = score > 0
        return Anomaly(index=index, score=score, alarm=alarm)

    # -- batch ---------------------------------------------------------------------------
    def _matrix(self, data: Any) -> np.ndarray:
        values = np.asarray(data, np.float64)
        if values.ndim == 1:
            values = values[:, None]
        if values.ndim != 2 or len(values) == 0:
            raise NotEnoughDataError(
                f"expected rows (n,) or (n, d) with n >= 1, got shape {values.shape}"
            )
        return values

    def fit(self, data: Any) -> AnomalyDetector:
        """Learn what normal looks like from ``data``: rows ``(n, d)``, values ``(n,)``, or
        for ``discord`` a normal stretch of the series (later series are joined with it).
        """
        if self.method == "discord":
            series = np.asarray(data, np.float64)
            if series.ndim != 1 or len(series) < self.window:
                raise NotEnoughDataError(
                    f"discord fits on a 1-D series of at least window={self.window} points, "
                    f"got shape {series.shape}"
                )
            self._reference = series
        elif self.method == "isolation_forest":
            from sklearn.ensemble import IsolationForest

            values = self._matrix(data)
            if len(values) < 2:
                raise NotEnoughDataError("isolation_forest needs at least 2 rows to fit")
            self._width = values.shape[1]
            self._model = IsolationForest(random_state=self.seed, **self.params).fit(values)
        elif self.method == "mad":
            values = self._matrix(data)
            self._width = values.shape[1]
            self._stats = _mad_stats(values)
            self._buffer.extend(values[-self._buffer.maxlen :] if self._buffer.maxlen else values)
        else:
            for row in self._matrix(data):
                self.update(row)
        self._fitted = True
        return self

    def score(self, data: Any) -> np.ndarray:
        """Scores of every row of ``data`` (or point of a series, for ``discord``).

        ``mad`` and ``isolation_forest`` score against what :meth:`fit` learned (fitted on
        ``data`` itself when :meth:`fit` was never called). Streaming methods score each
        row, then learn it, in order. ``discord`` gives each point the matrix-profile
        value of the subsequence centred on it (0 where no subsequence is centred).
        """
        if self.method == "discord":
            series = np.asarray(data, np.float64)
            m = self.window
            profile = matrix_profile(series, m)
            if self._reference is not None:
                profile = np.minimum(profile, matrix_profile(series, m, self._reference))
            scores = np.zeros(len(series))
            finite = np.where(np.isfinite(profile), profile, 0.0)
            scores[m // 2 : m // 2 + len(profile)] = finite
            return scores
        if self.method in ("mad", "isolation_forest") and not self._fitted:
            self.fit(data)
        if self.method == "mad":
            assert self._stats is not None
            values = self._matrix(data)
            return cast(np.ndarray, np.max(_robust_z(values, *self._stats), axis=1))
        if self.method == "isolation_forest":
            return cast(np.ndarray, -self._model.score_samples(self._matrix(data)))
        return np.array([self.update(row).score for row in self._matrix(data)])

    def predict(self, data: Any) -> np.ndarray:
        """Whether each row of ``data`` is an anomaly (its score past the threshold)."""
        scores = self.score(data)
        if self.method in ("adwin", "page_hinkley"):
            return scores > 0
        if self.method == "isolation_forest" and self.threshold is None:
            return cast(np.ndarray, scores > -self._model.offset_)
        if self.threshold is None:
            raise MonitorError(
                f"{self.method} has no default threshold; pass threshold= or read score() / top()"
            )
        return scores > self.threshold

    def top(self, data: Any, k: int = 1) -> list[int]:
        """Indices of the ``k`` highest-scoring rows (points, for ``discord``), best first;
        for ``discord`` the top ``k`` discords are at least one window apart."""
        scores = self.score(data)
        order = np.argsort(-scores, kind="stable")
        if self.method != "discord":
            return [int(i) for i in order[:k]]
        chosen: list[int] = []
        for i in order:
            if all(abs(int(i) - c) >= self.window for c in chosen):
                chosen.append(int(i))
            if len(chosen) == k:
                break
        return chosen
