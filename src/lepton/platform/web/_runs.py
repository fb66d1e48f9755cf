"""The Runs pages: tracked runs (paged), one run with a chart per metric and what it
produced, and runs compared side by side."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from lepton import registry, tracking
from lepton.errors import PlatformError, TrackingError
from lepton.platform._deps import P
from lepton.platform._http import RecordId, allow
from lepton.platform._queries import jobs_of_run
from lepton.platform.web._render import PER_PAGE, render
from lepton.tracking._plot import svg_string

__all__ = ["router"]

router = APIRouter(include_in_schema=False)
MAX_COMPARED = 8
Offset = Annotated[int, Query(ge=0, le=10**9)]


@router.get("/runs")
@allow("viewer")
def runs(p: P, request: Request, offset: Offset = 0) -> Response:
    """Tracked runs, newest first."""
    return render(
        request,
        "runs.html",
        section="/runs",
        runs=tracking.list_runs(limit=PER_PAGE, offset=offset, database=p.db),
        total=tracking.count_runs(database=p.db),
        offset=offset,
        per_page=PER_PAGE,
    )


def _metric_groups(keys: list[str]) -> dict[str, list[str]]:
    """``train_loss`` and ``val_loss`` share the ``loss`` chart."""
    groups: dict[str, list[str]] = {}
    for key in sorted(keys):
        base = key
        for prefix in ("train_", "val_", "test_"):
            if key.startswith(prefix):
                base = key[len(prefix) :]
                break
        groups.setdefault(base, []).append(key)
    return groups


@router.get("/runs/compare")  # before /runs/{run_id}, which would take "compare" for an id
@allow("viewer")
def compare(
    p: P,
    request: Request,
    run_ids: Annotated[list[int], Query(alias="id", max_length=MAX_COMPARED)] = [],  # noqa: B006
) -> Response:
    """Runs side by side: one chart per metric with a line per run, the parameters that
    differ, and the final metrics."""
    ids = list(dict.fromkeys(run_ids))
    if not 2 <= len(ids) <= MAX_COMPARED:
        raise PlatformError(
            f"pick 2 to {MAX_COMPARED} runs to compare (tick them on the Runs page), got {len(ids)}"
        )
    table = tracking.compare_runs(ids, database=p.db)
    histories = {i: tracking.metric_histories(i, database=p.db) for i in ids}
    charts = []
    for key in sorted(table["metrics"]):
        series = [(f"#{i}", histories[i][key]) for i in ids if histories[i].get(key)]
        try:
            charts.append(svg_string(series, title=key, y_label=key))
        except TrackingError:  # no run has a finite value of it
            continue
    return render(request, "compare.html", section="/runs", table=table, charts=charts)


@router.get("/runs/{run_id}")
@allow("viewer")
def run(p: P, request: Request, run_id: RecordId) -> Response:
    """One run: params, final metrics, a chart per metric, and what it produced."""
    record = tracking.get_run(run_id, database=p.db)
    histories = tracking.metric_histories(run_id, database=p.db)
    charts = []
    for base, keys in _metric_groups(list(histories)).items():
        try:
            charts.append(svg_string([(k, histories[k]) for k in keys], title=base, y_label=base))
        except TrackingError:  # only non-finite values (a diverged run): nothing to draw
            continue
    return render(
        request,
        "run.html",
        section="/runs",
        run=record,
        charts=charts,
        jobs=jobs_of_run(p.db, run_id),
        versions=registry.versions_of_run(run_id, database=p.db),
    )
