"""Reading studies back (for ``lepton tune``, the API and the dashboard): the list of
studies with their progress, one study in full, and its trials' per-epoch values."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import inspect

from lepton.errors import StudyNotFoundError
from lepton.storage import Database, open_database
from lepton.tune._optuna import import_optuna, storage_for
from lepton.tune._result import TuneResult, summarize

__all__ = ["StudySummary", "get_study", "intermediate_values", "list_studies"]


@dataclass(frozen=True)
class StudySummary:
    """One study in a list: its name, progress and best value so far."""

    name: str
    directions: list[str]
    trials: int
    best_value: float | None
    run_id: int | None
    started_at: float | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form."""
        return dict(self.__dict__)


def _has_studies(db: Database) -> bool:
    """Whether Optuna's tables exist: reading a database that never held a study must not
    create them (the first study does)."""
    return inspect(db.engine).has_table("studies")


def list_studies(*, database: Database | None = None) -> list[StudySummary]:
    """Every study in the database, newest first."""
    optuna = import_optuna()
    db = database or open_database()
    if not _has_studies(db):
        return []
    storage = storage_for(db)
    out = []
    for summary in optuna.get_all_study_summaries(storage, include_best_trial=True):
        best = summary.best_trial
        started = summary.datetime_start
        out.append(
            StudySummary(
                name=summary.study_name,
                directions=[d.name.lower() for d in summary.directions],
                trials=summary.n_trials,
                best_value=best.value
                if best is not None and len(summary.directions) == 1
                else None,
                run_id=summary.user_attrs.get("lepton.run_id"),
                started_at=started.timestamp() if started is not None else None,
            )
        )
    return sorted(out, key=lambda s: s.started_at or 0.0, reverse=True)


def _load(name: str, db: Database) -> Any:
    optuna = import_optuna()
    if not _has_studies(db):
        raise StudyNotFoundError(f"no study named {name!r}; see `lepton tune --list`")
    try:
        return optuna.load_study(study_name=name, storage=storage_for(db))
    except KeyError:
        raise StudyNotFoundError(f"no study named {name!r}; see `lepton tune --list`") from None


def get_study(name: str, *, database: Database | None = None) -> TuneResult:
    """One study: its trials, best trial, fANOVA importances and the study's run.

    Raises:
        StudyNotFoundError: No study has that name.
    """
    db = database or open_database()
    study = _load(name, db)
    run_id = study.user_attrs.get("lepton.run_id")
    metric = str(study.user_attrs.get("lepton.metric", "objective"))
    saved = study.user_attrs.get("lepton.importances") or {}
    current = saved.get("trials") == len(study.get_trials(deepcopy=False))
    result = summarize(
        study, run_id=int(run_id or 0), metric=metric, seconds=0.0, db=db, seed=0,
        known_importances=dict(saved["values"]) if current else None,
    )  # fmt: skip
    result.registered = study.user_attrs.get("lepton.registered")
    return result


def intermediate_values(name: str, *, database: Database | None = None) -> dict[int, list[float]]:
    """Each trial's reported values by step (the model form's per-epoch metric), in step
    order: what the pruner saw."""
    study = _load(name, database or open_database())
    return {
        t.number: [v for _, v in sorted(t.intermediate_values.items())]
        for t in study.get_trials(deepcopy=False)
    }
