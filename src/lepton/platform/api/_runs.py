"""``/api/v1/runs``: tracked runs, each with its last metrics and its metric histories."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from lepton import tracking
from lepton.platform._deps import P
from lepton.platform._http import Page, PageQuery, RecordId, allow
from lepton.tracking import RunRecord

__all__ = ["router"]

router = APIRouter(prefix="/api/v1")
RunState = Annotated[str | None, Query(pattern=f"^({'|'.join(tracking.RUN_STATES)})$")]


@router.get("/runs", tags=["runs"])
@allow("viewer")
def runs(p: P, paging: PageQuery, state: RunState = None) -> Page[RunRecord]:
    """Tracked runs, newest first."""
    found = tracking.list_runs(state=state, limit=paging.limit, offset=paging.offset, database=p.db)
    return Page.of((found, tracking.count_runs(state=state, database=p.db)), paging)


@router.get("/runs/{run_id}", tags=["runs"])
@allow("viewer")
def run(p: P, run_id: RecordId) -> RunRecord:
    """One run with the last value of each metric."""
    return tracking.get_run(run_id, database=p.db)


@router.get("/runs/{run_id}/metrics", tags=["runs"])
@allow("viewer")
def run_metrics(p: P, run_id: RecordId) -> dict[str, list[tuple[int, float]]]:
    """Every metric's history: ``{key: [[step, value], ...]}``."""
    tracking.get_run(run_id, database=p.db)  # 404 for an unknown run
    return tracking.metric_histories(run_id, database=p.db)
