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

from lepton.errors import LeptonError
from lepton.serve._predlog import read_predictions

if TYPE_CHECKING:
    from lepton.platform.deployments._aiops_state import AIOpsState

__all__ = ["DriftWatch", "inputs_matrix", "reference_of"]

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
