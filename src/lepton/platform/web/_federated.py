"""The Federated pages: federated runs (``lp.federated.run``, ``lepton federated``), and
one run's rounds: the global model's test accuracy and loss per round, the clients that
took part (and failed) in each, and the bytes each round moved.

Everything comes from the tracking run the federation logged (one step per round), so
this page needs neither Flower nor the job folder."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from lepton import tracking
from lepton.errors import RunNotFoundError, TrackingError
from lepton.platform._deps import P
from lepton.platform._http import RecordId, allow
from lepton.platform.web._render import PER_PAGE, render
from lepton.tracking._plot import svg_string

__all__ = ["router"]

router = APIRouter(include_in_schema=False)
Offset = Annotated[int, Query(ge=0, le=10**9)]
KIND = "federated"  # the tag lepton.federated puts on its runs
SCAN = 2000  # newest runs searched for federated ones


@router.get("/federated")
@allow("viewer")
def federated_runs(p: P, request: Request, offset: Offset = 0) -> Response:
    """Federated runs, newest first (among the newest runs)."""
    found = [r for r in tracking.list_runs(limit=SCAN, database=p.db)
             if r.tags.get("lepton.kind") == KIND]  # fmt: skip
    return render(
        request, "federated.html", section="/runs", runs=found[offset : offset + PER_PAGE],
        total=len(found), offset=offset, per_page=PER_PAGE, run=None,
    )  # fmt: skip


@router.get("/federated/{run_id}")
@allow("viewer")
def federated_run(p: P, request: Request, run_id: RecordId) -> Response:
    """One federated run: accuracy, loss and clients per round, and the rounds' table."""
    record = tracking.get_run(run_id, database=p.db)
    if record.tags.get("lepton.kind") != KIND:
        raise RunNotFoundError(f"run {run_id} is not a federated run; see /runs/{run_id}")
    histories = tracking.metric_histories(run_id, database=p.db)
    return render(
        request, "federated.html", section="/runs", run=record,
        charts=_charts(histories), rounds=_rounds(histories),
    )  # fmt: skip


def _charts(histories: dict[str, list[tuple[int, float]]]) -> dict[str, str]:
    wanted = {
        "accuracy": [("global accuracy", "global_accuracy")],
        "loss": [("global loss", "global_loss")],
        "clients": [("clients replied", "clients"), ("clients failed", "clients_failed")],
    }
    charts: dict[str, str] = {}
    for name, lines in wanted.items():
        series = [(label, histories[key]) for label, key in lines if histories.get(key)]
        if name == "clients":  # round 0 is the initial model: no clients
            series = [(label, [(s, v) for s, v in pts if s > 0]) for label, pts in series]
            series = [(label, pts) for label, pts in series if pts]
        if not series:
            continue
        try:
            charts[name] = svg_string(series, title=f"{name} per round", y_label=name)
        except TrackingError:  # nothing finite to draw
            continue
    return charts


def _rounds(histories: dict[str, list[tuple[int, float]]]) -> list[dict[str, Any]]:
    keys = ("global_accuracy", "global_loss", "clients", "clients_failed", "bytes_up",
            "bytes_down", "round_seconds")  # fmt: skip
    by_round: dict[int, dict[str, Any]] = {}
    for key in keys:
        for step, value in histories.get(key, []):
            by_round.setdefault(step, {"round": step})[key] = value
    return [by_round[s] for s in sorted(by_round)]
