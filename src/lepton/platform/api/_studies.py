"""``/api/v1/studies``: the tuning studies (``lp.tune``, ``tune`` jobs) and, for one study,
its trials, best trial, parameter importances and every trial's per-epoch values."""

from __future__ import annotations

import math
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel

from lepton import tune
from lepton.platform._deps import P
from lepton.platform._http import Page, PageQuery, StudyName, allow

__all__ = ["router"]

router = APIRouter(prefix="/api/v1")


class StudySummaryView(BaseModel):
    name: str
    directions: list[str]
    trials: int
    best_value: float | None
    run_id: int | None
    started_at: float | None


class TrialView(BaseModel):
    number: int
    state: str
    params: dict[str, Any]
    values: list[float] | None
    value: float | None
    run_id: int | None
    epochs: int | None
    seconds: float | None


class StudyView(BaseModel):
    """:meth:`lepton.tune.TuneResult.to_dict` plus each trial's per-epoch values."""

    study: str
    directions: list[str]
    metric: str
    best_params: dict[str, Any]
    best_value: float | None
    best_trial: int | None
    trials: list[TrialView]
    importances: dict[str, float]
    pareto: list[int]
    run_id: int
    registered: str | None
    seconds: float
    epochs_trained: int
    intermediate_values: dict[int, list[float | None]]


@router.get("/studies", tags=["studies"])
@allow("viewer")
def studies(p: P, paging: PageQuery) -> Page[StudySummaryView]:
    """Tuning studies, newest first, with their trial count and best value so far."""
    found = [StudySummaryView(**s.to_dict()) for s in tune.list_studies(database=p.db)]
    return Page.of((found[paging.offset : paging.offset + paging.limit], len(found)), paging)


@router.get("/studies/{name}", tags=["studies"])
@allow("viewer")
def study(p: P, name: StudyName) -> StudyView:
    """One study: its trials (params, values, state, run), best trial, fANOVA importances,
    Pareto front (multi-objective), and ``intermediate_values``: each trial's reported
    values by epoch, which show where the pruner stopped it (``null`` for a value that
    was not a finite number)."""
    result = tune.get_study(name, database=p.db)
    curves = tune.intermediate_values(name, database=p.db)
    return StudyView(
        **result.to_dict(),
        intermediate_values={
            number: [v if math.isfinite(v) else None for v in values]
            for number, values in curves.items()
        },
    )
