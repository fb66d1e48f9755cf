"""Figures over runs that a list or a chart needs: how many runs there are (for paging),
the states a run can be in, and every metric history of a run at once.

Example:
    >>> count_runs(state="finished")  # doctest: +SKIP
    12
    >>> metric_histories(3)["val_loss"][:2]  # doctest: +SKIP
    [(0, 0.91), (1, 0.55)]
"""

from __future__ import annotations

from sqlalchemy import func, select

from lepton.errors import TrackingError
from lepton.storage import Database, open_database
from lepton.storage.schema import MetricRow, RunRow
from lepton.tracking._run import STATES

__all__ = ["RUN_STATES", "count_runs", "metric_histories"]

RUN_STATES: tuple[str, ...] = tuple(STATES)  # the order a run moves through them


def count_runs(*, state: str | None = None, database: Database | None = None) -> int:
    """How many runs there are, optionally only those in ``state`` (the total that
    :func:`~lepton.tracking.list_runs` pages through).

    Raises:
        TrackingError: ``state`` is not one of :data:`RUN_STATES`.
    """
    if state is not None and state not in RUN_STATES:
        raise TrackingError(f"state must be one of {', '.join(RUN_STATES)}, got {state!r}")
    db = database or open_database()
    query = select(func.count()).select_from(RunRow)
    if state is not None:
        query = query.where(RunRow.state == state)
    with db.session() as s:
        return int(s.scalar(query) or 0)


def metric_histories(
    run_id: int, *, database: Database | None = None
) -> dict[str, list[tuple[int, float]]]:
    """Every metric of a run as ``{key: [(step, value), ...]}``, keys sorted, steps in
    order (one query, where :func:`~lepton.tracking.metric_history` reads one key)."""
    db = database or open_database()
    with db.session() as s:
        rows = s.execute(
            select(MetricRow.key, MetricRow.step, MetricRow.value)
            .where(MetricRow.run_id == run_id)
            .order_by(MetricRow.key, MetricRow.step, MetricRow.id)
        ).all()
    out: dict[str, list[tuple[int, float]]] = {}
    for key, step, value in rows:
        out.setdefault(str(key), []).append((int(step), float(value)))
    return out
