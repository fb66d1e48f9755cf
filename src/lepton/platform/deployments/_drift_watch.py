"""Drift of a deployment's logged inputs against the data its model was trained on.

The reference is the training dataset the version's lineage records (its manifest's
``dataset``: a catalog name, or a versioned ``name@N``, and its fingerprint), loaded with
:func:`lepton.data.load` and cached per version. The current sample is the newest
``window`` logged inputs of the deployment's prediction log. :func:`lepton.monitor.drift`
compares them feature by feature (KS per column; MMD for images), and the last report of
each deployment is kept for the dashboard, the API, the alert rules and ``/metrics``.

A version whose lineage names no dataset (registered without ``dataset=``) or whose
dataset cannot be loaded gets a report with ``error`` saying so and what to do.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel, Field

from lepton.errors import LeptonError
from lepton.serve._predlog import read_predictions

if TYPE_CHECKING:
    from lepton.platform.deployments._aiops_state import AIOpsState

__all__ = ["DriftSummary", "DriftWatch", "FeatureStat", "inputs_matrix", "reference_of", "summary"]

log = logging.getLogger("lepton.platform.deployments")


def reference_of(manifest: dict[str, Any]) -> tuple[np.ndarray, str]:
    """The training features a version's lineage names, as rows, and a description.

    Raises:
        LeptonError: The lineage names no dataset, or it cannot be loaded.
    """
    from lepton import data

    recorded = manifest.get("dataset") or {}
    name = recorded.get("name")
    if not name:
        raise LeptonError(
            "this version's lineage records no training dataset (it was registered without "
            "dataset=); register it with lp.register(model, name, dataset=train) to watch drift"
        )
    wanted = recorded.get("fingerprint")
    tried: list[str] = []
    for split in ("train", "all", "test"):
        loaded = data.load(str(name), split=split)
        features = getattr(loaded, "features", None)
        if features is None:
            raise LeptonError(f"dataset {name!r} has no feature matrix to compare inputs with")
        if wanted is None or getattr(loaded, "fingerprint", lambda: None)() == wanted:
            matrix = np.asarray(features, np.float64).reshape(len(features), -1)
            return matrix, f"{name} ({split}, {len(matrix)} rows)"
        tried.append(split)
        if "@" in str(name):
            break
    matrix = np.asarray(data.load(str(name)).features, np.float64)
    return matrix.reshape(len(matrix), -1), (
        f"{name} (train; its fingerprint differs from the lineage's {str(wanted)[:12]}: the "
        f"dataset changed since training)"
    )


def inputs_matrix(records: list[dict[str, Any]], width: int) -> np.ndarray:
    """The logged ``{"inputs": ...}`` of ``records`` as rows of ``width`` numbers (a
    record holding one sample or a batch of them); others are skipped."""
    rows: list[np.ndarray] = []
    for record in records:
        body = record.get("inputs")
        value = body.get("inputs") if isinstance(body, dict) else None
        if value is None:
            continue
        try:
            array = np.asarray(value, np.float64)
        except (TypeError, ValueError):
            continue
        if array.size == width:
            rows.append(array.reshape(width))
        elif array.size and array.size % width == 0:
            rows.extend(array.reshape(-1, width))
    return np.stack(rows) if rows else np.empty((0, width))


class FeatureStat(BaseModel):
    """One feature's test in a drift report."""

    name: str
    method: str = Field(description="ks, psi, wasserstein, chi2 or mmd.")
    statistic: float | None = Field(description="The test's statistic (None: not finite).")
    p_value: float | None = Field(description="Its p-value (None for psi and wasserstein).")
    threshold: float | None = Field(description="The level the decision compared with.")
    drifted: bool


class DriftSummary(BaseModel):
    """One stored drift report, in brief (the full one: ``GET .../drift`` for the last)."""

    at: float = Field(description="When it was computed, unix seconds.")
    version: str | None = Field(description="The version served then (model:N).")
    drifted: bool | None = Field(description="The verdict; None when ``error`` says why not.")
    share_drifted: float | None = Field(description="Drifted features / features, 0-1.")
    drifted_features: int | None
    features: int | None
    top: list[FeatureStat] = Field(description="Drifted features first, then by statistic.")
    current_rows: int | None = Field(description="Logged inputs compared.")
    reference_rows: int | None = Field(description="Reference rows compared.")
    reference: str | None = Field(description="The training data compared with.")
    error: str | None = Field(description="Why this report has no verdict, if so.")


def summary(report: dict[str, Any], top: int = 5) -> DriftSummary:
    """``report`` (as :meth:`DriftWatch.check` keeps it) in brief, with its ``top``
    features: the drifted ones first, then by statistic, largest first."""
    features = [f for f in report.get("features") or [] if isinstance(f, dict)]
    ranked = sorted(features, key=lambda f: (not f.get("drifted"), -(f.get("statistic") or 0)))
    drifted = sum(1 for f in features if f.get("drifted"))
    verdict = report.get("drifted")
    return DriftSummary(
        at=float(report.get("at") or 0.0), version=report.get("version"),
        drifted=None if verdict is None else bool(verdict),
        share_drifted=drifted / len(features) if features else None,
        drifted_features=drifted if features else None, features=len(features) or None,
        top=[FeatureStat.model_validate({"threshold": None, "p_value": None, "statistic": None,
                                         **f}) for f in ranked[:top]],
        current_rows=report.get("current_rows"), reference_rows=report.get("reference_rows"),
        reference=report.get("reference"), error=report.get("error"),
    )  # fmt: skip


class DriftWatch:
    """The last drift report of each deployment, recomputed every ``interval_s``.

    Args:
        window: Logged inputs compared with the reference (the newest ones).
        min_rows: Fewer logged inputs than this: no report yet.
        interval_s: Seconds between two reports of one deployment.
        max_reference: Reference rows used at most (a seeded random subset past it).
    """

    def __init__(
        self,
        *,
        window: int = 500,
        min_rows: int = 30,
        interval_s: float = 30.0,
        max_reference: int = 5000,
    ) -> None:
        self.window, self.min_rows = window, min_rows
        self.interval_s, self.max_reference = interval_s, max_reference
        self._lock = threading.Lock()
        self._reports: dict[str, dict[str, Any]] = {}
        self._references: dict[str, tuple[np.ndarray, str] | str] = {}
        self._due: dict[str, float] = {}
        self._state: AIOpsState | None = None

    def attach(self, state: AIOpsState) -> None:
        """Store every new report in ``state`` too, and start from the last ones it holds
        (a server restart keeps them)."""
        self._state = state
        with self._lock:
            for name, found in state.reports().items():
                self._reports.setdefault(name, found[-1])

    def report(self, name: str) -> dict[str, Any] | None:
        """The last report of deployment ``name`` (``None`` before the first)."""
        with self._lock:
            return self._reports.get(name)

    def reports(self) -> dict[str, dict[str, Any]]:
        """Every deployment's last report."""
        with self._lock:
            return dict(self._reports)

    def history(self, name: str, limit: int = 50) -> list[DriftSummary]:
        """The newest ``limit`` reports of deployment ``name``, newest first, in brief: the
        stored ones (the database keeps the newest 50), or the last one when no database
        is attached."""
        if self._state is not None:
            found = self._state.newest_reports(name, limit)
        else:
            last = self.report(name)
            found = [last] if last is not None else []
        return [summary(report) for report in found[:limit]]

    def forget(self, name: str) -> None:
        """Drop what is known of ``name`` (deleted)."""
        with self._lock:
            self._reports.pop(name, None)
            self._due.pop(name, None)

    def maybe_check(self, name: str, ref: str, manifest: dict[str, Any], folder: Path) -> None:
        """Recompute ``name``'s report if it is due and its log holds inputs."""
        now = time.monotonic()
        if now < self._due.get(name, 0.0) or not (folder / "predictions").is_dir():
            return
        self._due[name] = now + self.interval_s
        self.check(name, ref, manifest, folder)

    def check(self, name: str, ref: str, manifest: dict[str, Any], folder: Path) -> None:
        """Compare the newest logged inputs of ``name`` (serving version ``ref``) with the
        training data its lineage records, and keep the report."""
        from lepton.monitor import drift

        report: dict[str, Any] = {"deployment": name, "version": ref, "at": time.time()}
        reference = self._reference(ref, manifest)
        if isinstance(reference, str):
            report["error"] = reference
        else:
            matrix, described = reference
            current = inputs_matrix(read_predictions(folder / "predictions", self.window),
                                    matrix.shape[1])  # fmt: skip
            report["reference"], report["current_rows"] = described, len(current)
            if len(current) < self.min_rows:
                report["error"] = (
                    f"{len(current)} logged inputs of {matrix.shape[1]} values so far; drift "
                    f"is computed from {self.min_rows} (raise the prediction_log rate)"
                )
            else:
                try:
                    result = drift(matrix, current, max_samples=1000)
                    report.update(result.to_dict())
                except LeptonError as exc:
                    report["error"] = exc.message
        with self._lock:
            self._reports[name] = report
        if self._state is not None:
            self._state.add_report(name, report)

    def _reference(self, ref: str, manifest: dict[str, Any]) -> tuple[np.ndarray, str] | str:
        cached = self._references.get(ref)
        if cached is None:
            try:
                matrix, described = reference_of(manifest)
                if len(matrix) > self.max_reference:
                    pick = np.random.default_rng(0).choice(len(matrix), self.max_reference, False)
                    matrix = matrix[np.sort(pick)]
                cached = (matrix, described)
            except LeptonError as exc:
                cached = f"no drift reference for {ref}: {exc.message}"
            except Exception as exc:  # a dataset that is not on this machine, a bad file
                cached = f"no drift reference for {ref}: {type(exc).__name__}: {exc}"
            self._references[ref] = cached
        return cached
