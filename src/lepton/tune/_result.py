"""What a study produced: its trials, the best one, parameter importances, and the best
model (loaded from the best trial's run, registered with the study as its lineage)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import safetensors.torch
from torch import nn

from lepton import models as lp_models
from lepton.errors import TuneError
from lepton.storage import Database, artifact_store
from lepton.tune._optuna import import_optuna

if TYPE_CHECKING:
    import optuna

    from lepton.registry import ModelVersion

__all__ = ["TrialRecord", "TuneResult", "importances", "summarize"]


@dataclass(frozen=True)
class TrialRecord:
    """One trial: its number, state (``complete``, ``pruned``, ``fail``, ``running``),
    params, value(s), the tracking run that holds its per-epoch metrics, the epochs it
    trained (model form) and its wall time."""

    number: int
    state: str
    params: dict[str, Any]
    values: list[float] | None
    run_id: int | None
    epochs: int | None
    seconds: float | None

    @property
    def value(self) -> float | None:
        """The first objective's value."""
        return self.values[0] if self.values else None

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form."""
        return {**self.__dict__, "value": self.value}


@dataclass
class TuneResult:
    """What :func:`lepton.tune.tune` returns.

    Attributes:
        study: The study's name (resume it by passing the same ``study=``).
        directions: ``"maximize"`` / ``"minimize"``, one per objective.
        best_params: Params of the best trial (single objective).
        best_value: Its value.
        best_trial: Its number.
        trials: Every trial of the study, resumed ones included.
        importances: Parameter importances (Optuna's fANOVA), largest first.
        pareto: Trial numbers on the Pareto front (multi-objective studies).
        run_id: The study's tracking run (each trial is a child run of it).
        metric: What the model form optimized (``"val_accuracy"``), or ``"objective"``.
        registered: The registered best model (``"name:3"``), when registered.
        seconds: Wall time of this call.
    """

    study: str
    directions: list[str]
    best_params: dict[str, Any]
    best_value: float | None
    best_trial: int | None
    trials: list[TrialRecord]
    importances: dict[str, float]
    pareto: list[int]
    run_id: int
    metric: str
    registered: str | None = None
    seconds: float = 0.0
    database_url: str = field(default="", repr=False)

    def count(self, state: str) -> int:
        """How many trials are in ``state``."""
        return sum(t.state == state for t in self.trials)

    @property
    def epochs_trained(self) -> int:
        """Epochs over all trials (the compute a search spent; pruned trials stop early)."""
        return sum(t.epochs or 0 for t in self.trials)

    def summary(self) -> str:
        """A few readable lines: best value and params, trials by state, importances."""
        lines = [
            f"study {self.study!r}: {len(self.trials)} trials "
            f"({self.count('complete')} complete, {self.count('pruned')} pruned, "
            f"{self.count('fail')} failed) in {self.seconds:.1f} s"
        ]
        if self.best_trial is not None:
            lines.append(
                f"best {self.metric} = {self.best_value:.6g} (trial {self.best_trial}): "
                + ", ".join(f"{k}={_short(v)}" for k, v in self.best_params.items())
            )
        elif self.pareto:
            lines.append(f"Pareto front: trials {self.pareto}")
        if self.importances:
            lines.append(
                "importance: " + ", ".join(f"{k} {v:.2f}" for k, v in self.importances.items())
            )
        if self.registered:
            lines.append(f"registered as {self.registered}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form (what a tune job stores as its result)."""
        out = {k: v for k, v in self.__dict__.items() if k not in ("trials", "database_url")}
        out["trials"] = [t.to_dict() for t in self.trials]
        out["epochs_trained"] = self.epochs_trained
        return out

    def best_model(self) -> nn.Module:
        """The best trial's trained model (model form), rebuilt from its run's files.

        Raises:
            TuneError: A function-form study, or no completed trial.
        """
        return load_trial_model(self._best_record())

    def _best_record(self) -> TrialRecord:
        if self.best_trial is None:
            raise TuneError(f"study {self.study!r} has no completed trial to take a model from")
        return next(t for t in self.trials if t.number == self.best_trial)

    def register(self, name: str, *, dataset: Any | None = None) -> ModelVersion:
        """Register the best model as the next version of ``name``; the version's run is
        the best trial's run, whose parent is the study's run (the lineage)."""
        from lepton.registry import register
        from lepton.storage import open_database
        from lepton.tracking import get_run

        record = self._best_record()
        db = open_database(self.database_url or None)
        run = get_run(record.run_id, database=db) if record.run_id is not None else None
        metrics = {self.metric: float(self.best_value or 0.0)}
        version = register(
            self.best_model(), name, metrics=metrics, dataset=dataset, run=run, database=db,
            description=f"best trial ({record.number}) of tuning study {self.study!r}",
            lineage={"study": self.study, "trial": record.number, "study_run": self.run_id,
                     "params": self.best_params, self.metric: self.best_value},
        )  # fmt: skip
        self.registered = version.ref
        return version


def load_trial_model(record: TrialRecord) -> nn.Module:
    """Rebuild a completed model-form trial's model from its run's artifacts."""
    if record.run_id is None or record.state != "complete":
        raise TuneError(f"trial {record.number} did not complete; it has no model")
    store = artifact_store()
    key = f"runs/{record.run_id}"
    if not store.exists(f"{key}/model.json"):
        raise TuneError(
            f"trial {record.number} stored no model (a function-form study trains none)"
        )
    model = lp_models.build(json.loads(store.get(f"{key}/model.json")))
    model.load_state_dict(safetensors.torch.load(store.get(f"{key}/model.safetensors")))
    return model.eval()


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def importances(study: optuna.Study, seed: int = 0) -> dict[str, float]:
    """fANOVA importances of the study's params (empty with fewer than 2 completed
    trials or nothing that varied)."""
    optuna = import_optuna()
    done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if len(study.directions) != 1 or len(done) < 2:
        return {}
    varied = {k for t in done for k in t.params if len({repr(u.params.get(k)) for u in done}) > 1}
    if not varied:
        return {}
    try:
        found = optuna.importance.get_param_importances(
            study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=seed)
        )
    except (RuntimeError, ValueError):  # e.g. a conditional param present in one trial only
        return {}
    return {k: float(v) for k, v in found.items() if math.isfinite(v)}


def _record(t: optuna.trial.FrozenTrial) -> TrialRecord:
    return TrialRecord(
        number=t.number, state=t.state.name.lower(), params=dict(t.params),
        values=list(t.values) if t.values is not None else None,
        run_id=t.user_attrs.get("lepton.run_id"), epochs=t.user_attrs.get("lepton.epochs"),
        seconds=t.duration.total_seconds() if t.duration is not None else None,
    )  # fmt: skip


def summarize(
    study: optuna.Study,
    *,
    run_id: int,
    metric: str,
    seconds: float,
    db: Database,
    seed: int,
    known_importances: dict[str, float] | None = None,
) -> TuneResult:
    """Freeze a study into a :class:`TuneResult` (fANOVA importances computed unless
    ``known_importances`` are given)."""
    optuna = import_optuna()
    states = optuna.trial.TrialState
    trials = [_record(t) for t in study.get_trials(deepcopy=False)]
    directions = [d.name.lower() for d in study.directions]
    complete = [t for t in study.get_trials(deepcopy=False, states=(states.COMPLETE,))]
    best_params: dict[str, Any] = {}
    best_value, best_trial, pareto = None, None, []
    if len(directions) == 1 and complete:
        best = study.best_trial
        best_params, best_value, best_trial = dict(best.params), best.value, best.number
    elif complete:
        pareto = [t.number for t in study.best_trials]
    return TuneResult(
        study=study.study_name, directions=directions, best_params=best_params,
        best_value=best_value, best_trial=best_trial, trials=trials,
        importances=importances(study, seed) if known_importances is None else known_importances,
        pareto=pareto, run_id=run_id, metric=metric,
        seconds=seconds, database_url=db.url,
    )  # fmt: skip
