"""The AIOps loop's state in the metadata database, so that ``lepton server`` restarts
with the anomalies, anomaly counts and drift reports its deployment pages showed.

One table, ``aiops_state`` (migration 0007): a row per anomaly, a row per drift report,
and one row of anomaly counts per deployment. Every write is one transaction (the new row,
the counts, and the pruning of rows past the bound), so a failure leaves the previous
state whole; the newest ``keep_anomalies`` anomalies and ``keep_reports`` drift reports of
each deployment are kept.

:class:`AIOpsState` is the one place that reads and writes that table; the loop
(:class:`~._aiops.AIOps`) and :class:`~._drift_watch.DriftWatch` call it.
"""

from __future__ import annotations

import math
import time
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from lepton.storage import Database
from lepton.storage.schema import AIOpsStateRow

__all__ = ["AIOpsState", "json_safe"]

ANOMALY, DRIFT, COUNTS = "anomaly", "drift", "counts"


def json_safe(value: Any) -> Any:
    """``value`` with numpy scalars as Python numbers and NaN/inf as ``None`` (PostgreSQL's
    JSON refuses them), dicts and lists walked; other values unchanged."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 1) == 0:
        value = value.item()  # a numpy scalar
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class AIOpsState:
    """Anomalies, their counts and drift reports of every deployment, in ``db``.

    Args:
        db: The platform's metadata database (schema 0007 or later).
        keep_anomalies: Newest anomalies kept per deployment.
        keep_reports: Newest drift reports kept per deployment.
    """

    def __init__(self, db: Database, *, keep_anomalies: int = 500, keep_reports: int = 50) -> None:
        self.db = db
        self.keep_anomalies, self.keep_reports = keep_anomalies, keep_reports

    # -- writing ------------------------------------------------------------------------

    def add_anomaly(self, deployment: str, anomaly: dict[str, Any], counts: dict[str, int]) -> None:
        """Store one anomaly of ``deployment`` and its counts by series now (atomic)."""
        with self.db.session() as s:
            s.execute(
                delete(AIOpsStateRow).where(
                    AIOpsStateRow.deployment == deployment, AIOpsStateRow.kind == COUNTS
                )
            )
            s.add(AIOpsStateRow(deployment=deployment, kind=COUNTS, at=time.time(),
                                data=json_safe(dict(counts))))  # fmt: skip
            s.add(AIOpsStateRow(deployment=deployment, kind=ANOMALY,
                                at=float(anomaly.get("t") or time.time()),
                                data=json_safe(dict(anomaly))))  # fmt: skip
            s.flush()
            self._prune(s, deployment, ANOMALY, self.keep_anomalies)

    def add_report(self, deployment: str, report: dict[str, Any]) -> None:
        """Store a drift report of ``deployment`` (atomic)."""
        with self.db.session() as s:
            s.add(AIOpsStateRow(deployment=deployment, kind=DRIFT,
                                at=float(report.get("at") or time.time()),
                                data=json_safe(dict(report))))  # fmt: skip
            s.flush()
            self._prune(s, deployment, DRIFT, self.keep_reports)

    def forget(self, deployment: str) -> None:
        """Drop everything stored of ``deployment`` (deleted)."""
        with self.db.session() as s:
            s.execute(delete(AIOpsStateRow).where(AIOpsStateRow.deployment == deployment))

    @staticmethod
    def _prune(s: Session, deployment: str, kind: str, keep: int) -> None:
        newest = (
            select(AIOpsStateRow.id)
            .where(AIOpsStateRow.deployment == deployment, AIOpsStateRow.kind == kind)
            .order_by(AIOpsStateRow.id.desc())
            .offset(keep)
            .limit(1)
        )
        cut = s.scalar(newest)
        if cut is not None:
            s.execute(
                delete(AIOpsStateRow).where(
                    AIOpsStateRow.deployment == deployment,
                    AIOpsStateRow.kind == kind,
                    AIOpsStateRow.id <= cut,
                )
            )

    # -- reading ------------------------------------------------------------------------

    def anomalies(self) -> dict[str, tuple[list[dict[str, Any]], dict[str, int]]]:
        """Each deployment's stored anomalies (oldest first) and counts by series."""
        out: dict[str, tuple[list[dict[str, Any]], dict[str, int]]] = {}
        with self.db.session() as s:
            rows = s.scalars(
                select(AIOpsStateRow)
                .where(AIOpsStateRow.kind.in_((ANOMALY, COUNTS)))
                .order_by(AIOpsStateRow.id)
            ).all()
        for row in rows:
            found, counts = out.setdefault(row.deployment, ([], {}))
            if row.kind == ANOMALY:
                found.append(dict(row.data))
            else:
                counts.update({str(k): int(v) for k, v in row.data.items()})
        return out

    def reports(self, deployment: str | None = None) -> dict[str, list[dict[str, Any]]]:
        """The stored drift reports of each deployment (or of ``deployment``), oldest
        first."""
        query = select(AIOpsStateRow).where(AIOpsStateRow.kind == DRIFT)
        if deployment is not None:
            query = query.where(AIOpsStateRow.deployment == deployment)
        out: dict[str, list[dict[str, Any]]] = {}
        with self.db.session() as s:
            for row in s.scalars(query.order_by(AIOpsStateRow.id)).all():
                out.setdefault(row.deployment, []).append(dict(row.data))
        return out

    def newest_reports(self, deployment: str, limit: int) -> list[dict[str, Any]]:
        """The newest ``limit`` stored drift reports of ``deployment``, newest (by the time
        they were computed) first."""
        query = (
            select(AIOpsStateRow.data)
            .where(AIOpsStateRow.kind == DRIFT, AIOpsStateRow.deployment == deployment)
            .order_by(AIOpsStateRow.at.desc(), AIOpsStateRow.id.desc())
            .limit(limit)
        )
        with self.db.session() as s:
            return [dict(data) for data in s.scalars(query).all()]
