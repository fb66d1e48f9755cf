"""What a drift test reports: one :class:`FeatureDrift` per feature, and the
:class:`DriftReport` with the overall verdict (built by :func:`lepton.monitor.drift`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["DriftReport", "FeatureDrift"]


@dataclass(frozen=True)
class FeatureDrift:
    """The drift of one feature (or of all image/embedding features together).

    Attributes:
        name: Column name (``"features"`` for an image/embedding matrix).
        kind: ``"numeric"``, ``"categorical"`` or ``"embedding"``.
        method: The test that decided: ``ks``, ``psi``, ``wasserstein``, ``chi2`` or ``mmd``.
        statistic: That test's statistic.
        p_value: Its p-value (``None`` for ``psi`` and ``wasserstein``).
        threshold: The level it was compared with: the corrected ``alpha`` for a p-value
            test, else the statistic's threshold.
        drifted: Whether this feature drifted.
        scores: Every statistic computed for the feature (e.g. ``psi`` and
            ``wasserstein`` next to a KS decision).
    """

    name: str
    kind: str
    method: str
    statistic: float
    p_value: float | None
    threshold: float
    drifted: bool
    scores: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form."""
        return {
            "name": self.name,
            "kind": self.kind,
            "method": self.method,
            "statistic": self.statistic,
            "p_value": self.p_value,
            "threshold": self.threshold,
            "drifted": self.drifted,
            "scores": dict(self.scores),
        }


@dataclass(frozen=True)
class DriftReport:
    """Per-feature drift between a reference and a current sample, and the verdict.

    Attributes:
        features: One :class:`FeatureDrift` per feature.
        drifted: The overall verdict: some feature drifted.
        alpha: The family-wise level of the p-value tests.
        reference_rows: Rows in the reference.
        current_rows: Rows in the current sample.
    """

    features: tuple[FeatureDrift, ...]
    drifted: bool
    alpha: float
    reference_rows: int
    current_rows: int

    @property
    def drifted_features(self) -> list[str]:
        """Names of the features that drifted."""
        return [f.name for f in self.features if f.drifted]

    @property
    def share_drifted(self) -> float:
        """Fraction of features that drifted."""
        return len(self.drifted_features) / len(self.features) if self.features else 0.0

    def __getitem__(self, name: str) -> FeatureDrift:
        for feature in self.features:
            if feature.name == name:
                return feature
        raise KeyError(f"no feature {name!r} in this report; it has {self.names}")

    @property
    def names(self) -> list[str]:
        """Feature names, in order."""
        return [f.name for f in self.features]

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form."""
        return {
            "drifted": self.drifted,
            "alpha": self.alpha,
            "reference_rows": self.reference_rows,
            "current_rows": self.current_rows,
            "drifted_features": self.drifted_features,
            "features": [f.to_dict() for f in self.features],
        }

    def __str__(self) -> str:
        verdict = "DRIFT" if self.drifted else "no drift"
        lines = [
            f"{verdict}: {len(self.drifted_features)} of {len(self.features)} features drifted "
            f"(reference {self.reference_rows} rows, current {self.current_rows} rows, "
            f"alpha {self.alpha:g})"
        ]
        width = max([7, *(len(f.name) for f in self.features)])
        lines.append(
            f"{'feature':<{width}}  {'kind':<11}  {'test':<11}  {'statistic':>10}  "
            f"{'p-value':>9}  {'threshold':>9}  drifted"
        )
        for f in self.features:
            p = f"{f.p_value:9.3g}" if f.p_value is not None else f"{'-':>9}"
            lines.append(
                f"{f.name:<{width}}  {f.kind:<11}  {f.method:<11}  {f.statistic:10.4g}  {p}  "
                f"{f.threshold:9.3g}  {'yes' if f.drifted else 'no'}"
            )
        return "\n".join(lines)
