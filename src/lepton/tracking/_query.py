"""Reading runs back: list, get, metric histories and comparisons (each reconciles
crashed runs first, see :mod:`lepton.tracking._reconcile`)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from lepton.errors import RunNotFoundError, TrackingError
from lepton.storage import Database, open_database
from lepton.storage.schema import MetricRow, RunRow
from lepton.tracking._reconcile import reconcile
from lepton.tracking._run import STATES, RunRecord, last_metrics, rows_to_record

__all__ = ["compare_runs", "get_run", "list_runs", "metric_history"]


def get_run(run_id: int, *, database: Database | None = None) -> RunRecord:
    """One run with the last value of each of its metrics."""
    db = database or open_database()
    reconcile(db)
    with db.session() as s:
        row = s.get(RunRow, run_id)
        if row is None:
            raise RunNotFoundError(f"no run with id {run_id}; see `lepton runs list`")
        s.expunge(row)
    return rows_to_record(row, last_metrics(db, run_id))


def list_runs(
    *,
    state: str | None = None,
    parent: int | None = None,
    limit: int = 100,
    offset: int = 0,
    database: Database | None = None,
) -> list[RunRecord]:
    """Runs, newest first, optionally filtered by state or by parent run (a study's
    trials)."""
    if state is not None and state not in STATES:
        raise TrackingError(f"state must be one of {', '.join(STATES)}, got {state!r}")
    db = database or open_database()
    reconcile(db)
    query = select(RunRow).order_by(RunRow.id.desc()).limit(limit).offset(offset)
    if state is not None:
        query = query.where(RunRow.state == state)
    if parent is not None:
        query = query.where(RunRow.parent_id == parent)
    with db.session() as s:
        rows = list(s.scalars(query))
        s.expunge_all()
    return [rows_to_record(row, last_metrics(db, row.id)) for row in rows]


def metric_history(
    run_id: int, key: str, *, database: Database | None = None
) -> list[tuple[int, float]]:
    """``(step, value)`` pairs of one metric of a run, in step order."""
    db = database or open_database()
    with db.session() as s:
        rows = s.execute(
            select(MetricRow.step, MetricRow.value)
            .where(MetricRow.run_id == run_id, MetricRow.key == key)
            .order_by(MetricRow.step, MetricRow.id)
        ).all()
    return [(int(step), float(value)) for step, value in rows]


def _flatten(params: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in params.items():
        if isinstance(value, dict) and value:
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def compare_runs(run_ids: list[int], *, database: Database | None = None) -> dict[str, Any]:
    """Side-by-side params (only those that differ, nested ones as ``fit.lr``) and the
    last value of every metric, one column per run."""
    records = [get_run(i, database=database) for i in run_ids]
    flat = [_flatten(r.params) for r in records]
    keys = sorted({k for params in flat for k in params})
    differing = [k for k in keys if len({repr(params.get(k)) for params in flat}) > 1]
    metric_keys = sorted({k for r in records for k in r.metrics})
    return {
        "runs": [{"id": r.id, "name": r.name, "state": r.state} for r in records],
        "params": {k: [params.get(k) for params in flat] for k in differing},
        "metrics": {k: [r.metrics.get(k) for r in records] for k in metric_keys},
    }
