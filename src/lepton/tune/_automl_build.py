"""Refit the chosen trials on every row and assemble the one pipeline module.

Members are refit in order of weight, each only if its estimated refit fits in the time
left; a member whose refit would not fit keeps the model its trial fit on the first fold
(on ``(cv-1)/cv`` of the rows), and one whose refit the deadline cuts short is dropped,
unless it is the first: then the cut model is kept. The weights of the members left are
renormalized. One member gives a ``TabularPipeline`` with its head; several give one
whose head is a ``TabularEnsemble``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from lepton.models import TabularEnsemble, TabularPipeline
from lepton.tune._automl_data import Metric, metric_value
from lepton.tune._automl_ensemble import Member
from lepton.tune._automl_families import FAMILIES
from lepton.tune._automl_family import Context, Head
from lepton.tune._automl_prep import ColumnPlan
from lepton.tune._automl_search import Search

__all__ = ["Refit", "assemble", "ensemble_scores", "refit"]

Matrix = npt.NDArray[np.float64]


@dataclass
class Refit:
    """A member refit on every row: its trial, renormalized weight and head."""

    member: Member
    weight: float
    head: Head
    subset: str  # "selected" or "all"


def refit(
    members: list[Member],
    matrices: dict[str, Matrix],
    y: npt.NDArray[Any],
    ctx: Context,
    search: Search,
    deadline: float,
    notes: list[str],
) -> list[Refit]:
    """Refit ``members`` on every row within the deadline (see the module docstring)."""
    done: list[Refit] = []
    for i, member in enumerate(members):
        trial = member.trial
        family = FAMILIES[trial.family]
        params = {k: v for k, v in trial.params.items() if k != "features"}
        subset = str(trial.params.get("features", "selected"))
        name = f"{trial.family} #{trial.number}"
        late = time.perf_counter() + search.refit_seconds(trial) > deadline - search.margin
        if late and trial.number in search.fold_models:
            model = search.fold_models[trial.number]
            notes.append(f"{name}: no time to refit on every row; its first-fold model is used")
        elif late and i > 0:
            notes.append(f"{name} left out of the ensemble: no time to refit it")
            continue
        else:
            model, cut = family.fit(params, matrices[subset], y, ctx, deadline)
            if cut and i > 0:
                notes.append(f"{name} left out of the ensemble: its refit was cut short")
                continue
            if cut:
                notes.append(f"{name}: the refit was stopped at the budget (fewer iterations)")
        head = family.head(model, matrices[subset].shape[1], ctx)
        done.append(Refit(member, member.weight, head, subset))
    total = sum(r.weight for r in done)
    for r in done:
        r.weight /= total
    return done


def assemble(
    fitted: list[Refit], plan: ColumnPlan, kept: list[int], num_classes: int | None
) -> TabularPipeline:
    """One ``TabularPipeline``: the plan's preprocessing and the refit head(s)."""
    if len(fitted) == 1:
        only = fitted[0]
        columns = kept if only.subset == "selected" else list(range(len(plan.feature_names)))
        pipeline = plan.pipeline(only.head.spec, columns, num_classes, only.head.target)
        pipeline.head.load_state_dict(only.head.state)
        return pipeline
    wide = any(r.subset == "all" for r in fitted)
    columns = list(range(len(plan.feature_names))) if wide else kept
    positions = {
        "all": list(range(len(columns))),
        "selected": kept if wide else list(range(len(kept))),
    }
    spec = {
        "name": "tabular_ensemble",
        "config": {
            "in_features": len(columns),
            "members": [
                {"head": r.head.spec, "columns": len(positions[r.subset]), "weight": r.weight}
                for r in fitted
            ],
            "num_classes": num_classes,
        },
    }
    pipeline = plan.pipeline(spec, columns, num_classes)
    ensemble = pipeline.head
    assert isinstance(ensemble, TabularEnsemble)
    with torch.no_grad():
        for i, r in enumerate(fitted):
            ensemble.heads[i].load_state_dict(r.head.state)
            getattr(ensemble, f"columns_{i}").copy_(torch.as_tensor(positions[r.subset]))
            getattr(ensemble, f"target_{i}").copy_(torch.tensor(r.head.target))
    return pipeline


def ensemble_scores(fitted: list[Refit], search: Search, metric: Metric) -> tuple[float, float]:
    """Mean and std over the folds of the refit members' weighted validation predictions."""
    combined = sum(r.weight * search.predictions[r.member.trial.number] for r in fitted)
    assert isinstance(combined, np.ndarray)
    scores, start = [], 0
    for _, rows in search.folds:
        part = slice(start, start + len(rows))
        scores.append(metric_value(metric, search.y[rows], combined[part]))
        start += len(rows)
    return float(np.mean(scores)), float(np.std(scores))
