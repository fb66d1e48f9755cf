"""The Studies pages: the tuning studies (``lp.tune``, ``tune`` jobs), and one study with
its best trial, how the search went (best value so far, every trial's per-epoch curve,
where the pruner stopped trials), its trials, parameter importances and a
parallel-coordinates plot of the params of every complete trial."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from lepton import tune
from lepton.platform._deps import P
from lepton.platform._http import StudyName, allow
from lepton.platform.web._parallel_chart import parallel_chart
from lepton.platform.web._render import PER_PAGE, render
from lepton.platform.web._study_charts import (
    best_so_far_chart,
    curves_chart,
    importance_chart,
    pareto_chart,
)
from lepton.tune import TuneResult

__all__ = ["router"]

router = APIRouter(include_in_schema=False)
Offset = Annotated[int, Query(ge=0, le=10**9)]
# The API's rule for a study's name (api/_studies.py): no control character, no slash,
# at most 512 characters (Optuna's column).
STATES = ("complete", "pruned", "fail", "running", "waiting")


@router.get("/studies")
@allow("viewer")
def studies(p: P, request: Request, offset: Offset = 0) -> Response:
    """Tuning studies, newest first: trials, best value, when they started."""
    found = tune.list_studies(database=p.db)
    return render(
        request,
        "studies.html",
        section="/studies",
        studies=found[offset : offset + PER_PAGE],
        total=len(found),
        offset=offset,
        per_page=PER_PAGE,
    )


@router.get("/studies/{name}")
@allow("viewer")
def study(p: P, request: Request, name: StudyName) -> Response:
    """One study: best trial and registered model, the search's charts, every trial."""
    result = tune.get_study(name, database=p.db)
    curves = tune.intermediate_values(name, database=p.db)
    registered = result.registered.split(":", 1) if result.registered else None
    return render(
        request,
        "study.html",
        section="/studies",
        study=result,
        counts={s: result.count(s) for s in STATES if result.count(s)},
        registered=registered,
        charts=_charts(result, curves),
    )


def _param_order(result: TuneResult) -> list[str]:
    """The study's params, most important first (then in the order trials show them)."""
    seen = dict.fromkeys(result.importances)
    for trial in result.trials:
        seen.update(dict.fromkeys(k for k in trial.params if k not in seen))
    return list(seen)


def _charts(result: TuneResult, curves: dict[int, list[float]]) -> dict[str, str]:
    """The study page's SVG charts by name; a chart with nothing to show is left out and
    the page says why instead."""
    done = [t for t in result.trials if t.state == "complete" and t.values]
    single = len(result.directions) == 1
    charts: dict[str, str] = {}
    if done and single:
        values = [(t.number, t.values[0]) for t in done if t.values]
        charts["best"] = best_so_far_chart(
            values, direction=result.directions[0], y_label=result.metric
        )
    if done and len(result.directions) == 2:
        points = [(t.number, t.values[0], t.values[1]) for t in done if t.values]
        x_label, y_label = (f"objective {i} ({d[:3]})" for i, d in enumerate(result.directions))
        charts["pareto"] = pareto_chart(points, result.pareto, x_label=x_label, y_label=y_label)
    if any(curves.values()):
        pruned = {t.number for t in result.trials if t.state == "pruned"}
        charts["curves"] = curves_chart(
            curves, pruned=pruned, best=result.best_trial, y_label=result.metric
        )
    if result.importances:
        charts["importance"] = importance_chart(result.importances)
    if done:
        rows = [(t.number, t.params, t.values[0]) for t in done if t.values]
        charts["parallel"] = parallel_chart(
            rows,
            _param_order(result),
            objective=result.metric if single else "objective 0",
            direction=result.directions[0],
        )
    return charts
