"""Monitoring: data drift between a reference and current data, and anomaly detection.

- **Drift**: :func:`drift` compares two samples feature by feature (Kolmogorov-Smirnov,
  PSI, Wasserstein for numbers; chi-square for categories; MMD with an RBF kernel for
  images and embeddings) and returns a printable :class:`DriftReport` with an overall
  verdict. :class:`DriftWindow` and :func:`drift_windows` do it over tumbling or sliding
  windows of a stream of rows.
- **Anomalies**: :class:`AnomalyDetector` puts streaming detectors (robust z-score,
  river's HalfSpaceTrees, ADWIN and Page-Hinkley) and batch ones (IsolationForest,
  matrix-profile discords) behind one API: ``update(x)`` for a stream, ``fit`` /
  ``score`` / ``predict`` / ``top`` for a batch.

Example:
    >>> import lepton as lp
    >>> iris = lp.data.load("iris", split="all")  # doctest: +SKIP
    >>> first, second = iris.subset(slice(0, 75)), iris.subset(slice(75, 150))  # doctest: +SKIP
    >>> print(lp.monitor.drift(first, second))  # doctest: +SKIP
    >>> series = lp.data.load("ucr-135", split="all")  # doctest: +SKIP
    >>> lp.monitor.AnomalyDetector("discord", window=100).top(series.values)  # doctest: +SKIP
"""

from lepton.monitor._anomaly import (
    DETECTORS,
    Anomaly,
    AnomalyDetector,
    DetectorMethod,
    matrix_profile,
    subsequences,
)
from lepton.monitor._drift import (
    DRIFT_METHODS,
    DriftReport,
    FeatureDrift,
    Method,
    drift,
    ks,
    mmd,
    psi,
    wasserstein,
)
from lepton.monitor._statistics import wasserstein_threshold
from lepton.monitor._windows import DriftWindow, WindowDrift, drift_windows

__all__ = [
    "DETECTORS",
    "DRIFT_METHODS",
    "Anomaly",
    "AnomalyDetector",
    "DetectorMethod",
    "DriftReport",
    "DriftWindow",
    "FeatureDrift",
    "Method",
    "WindowDrift",
    "drift",
    "drift_windows",
    "ks",
    "matrix_profile",
    "mmd",
    "psi",
    "subsequences",
    "wasserstein",
    "wasserstein_threshold",
]
