"""What one trial does: the function form (any objective) and the model form (build a zoo
model from the sampled config, train it with ``lp.fit``, report every epoch to the
pruner). Every trial is a tracking run under the study's run.

Both objectives are plain classes so that ``workers=N`` can send them to worker
processes.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import safetensors.torch
import torch

from lepton import models as lp_models
from lepton.data import Dataset
from lepton.errors import LeptonError, ModelError, SearchSpaceError, TrainingError, TuneError
from lepton.storage import open_database
from lepton.tracking import Run, start_run
from lepton.train import Callback, fit
from lepton.train._callbacks import TrainState
from lepton.train.recipe import build_model
from lepton.tune._optuna import import_optuna, mark_owner
from lepton.tune._space import Categorical, Space, sample

if TYPE_CHECKING:
    import optuna

__all__ = [
    "CAUGHT",
    "FIT_KEYS",
    "FunctionObjective",
    "ModelObjective",
    "PruningCallback",
    "TrialContext",
    "check_model_space",
    "model_config",
]

# Keys of a model-form space that go to ``lp.fit``; "model" picks the zoo model; every
# other key is an argument of the model.
FIT_KEYS = frozenset(
    {"lr", "batch_size", "optimizer", "weight_decay", "momentum", "schedule", "grad_clip"}
)
TRIAL_STATE_TAG = "lepton.trial_state"
# Errors that fail one trial and let the study go on (a diverged training, a config the
# model rejects); anything else stops the study.
CAUGHT: tuple[type[Exception], ...] = (TrainingError, ModelError)


class PruningCallback(Callback):
    """Reports ``monitor`` to an Optuna trial after every epoch and stops the training
    when the pruner says so (``lp.fit`` then returns; the objective raises
    ``TrialPruned``).

    Example:
        >>> lp.fit(model, train, val, callbacks=[PruningCallback(trial)])  # doctest: +SKIP
    """

    def __init__(self, trial: optuna.Trial, monitor: str = "val_accuracy") -> None:
        self.trial = trial
        self.monitor = monitor
        self.pruned_at: int | None = None

    def on_epoch_end(self, state: TrainState) -> None:
        record = state.history[-1]
        value = record.get(self.monitor)
        if value is None:
            raise TuneError(
                f"the trial reports {self.monitor!r}, which this fit does not compute; "
                f"use one of {_metric_names(record.train, record.val)}"
            )
        self.trial.report(float(value), record.epoch)
        # counted as it goes, so a trial that fails later still shows its epochs
        self.trial.set_user_attr("lepton.epochs", record.epoch)
        if self.trial.should_prune():
            self.pruned_at = record.epoch
            state.should_stop = True


def _metric_names(train: Mapping[str, float], val: Mapping[str, float]) -> str:
    return ", ".join([*(f"val_{k}" for k in val), *(f"train_{k}" for k in train)])


@dataclass
class TrialContext:
    """Handed to a two-argument objective ``fn(params, trial)``: report intermediate
    values to the pruner and stop early when told.

    Example:
        >>> def objective(params, trial):
        ...     for step in range(10):
        ...         score = ...
        ...         if trial.report(score, step):  # True: the pruner stops this trial
        ...             break
        ...     return score
    """

    number: int
    run: Run
    _trial: optuna.Trial = field(repr=False)
    pruned: bool = False

    def report(self, value: float, step: int) -> bool:
        """Report ``value`` at ``step`` (logged to the trial's run as ``objective``);
        returns ``True`` when the trial should stop (pruned)."""
        self._trial.report(float(value), step)
        self.run.log_metric("objective", float(value), step=step)
        self.pruned = self._trial.should_prune()
        return self.pruned


@dataclass
class _Shared:
    """What every trial of a study needs to know (JSON-safe, so it travels to workers)."""

    study: str
    parent_run: int
    database_url: str
    metric_names: tuple[str, ...]


def _trial_run(shared: _Shared, trial: optuna.Trial, params: Mapping[str, Any]) -> Run:
    run = start_run(
        f"{shared.study}-trial-{trial.number}",
        params=dict(params),
        tags={"lepton.study": shared.study, "lepton.trial": trial.number},
        parent=shared.parent_run,
        database=open_database(shared.database_url),
    )
    trial.set_user_attr("lepton.run_id", run.id)
    return run


@contextlib.contextmanager
def _errors_recorded(trial: optuna.Trial) -> Iterator[None]:
    """A trial that fails keeps its reason (``lepton.error``) for the study's report."""
    try:
        yield
    except CAUGHT as exc:
        message = exc.message if isinstance(exc, LeptonError) else str(exc)
        trial.set_user_attr("lepton.error", f"{type(exc).__name__}: {message}"[:1000])
        raise


def _finish(run: Run, state: str, values: Sequence[float] | None, names: Sequence[str]) -> None:
    if values is not None:
        run.log_metrics({f"trial_{n}": v for n, v in zip(names, values, strict=True)})
    run.set_tags({TRIAL_STATE_TAG: state})


class FunctionObjective:
    """Calls ``fn(params)`` (or ``fn(params, trial)``) with the sampled params."""

    def __init__(self, fn: Callable[..., Any], space: Space, shared: _Shared) -> None:
        self.fn = fn
        self.space = space
        self.shared = shared
        self.with_trial = _takes_two(fn)

    def __call__(self, trial: optuna.Trial) -> float | Sequence[float]:
        optuna = import_optuna()
        mark_owner(trial)  # first: a trial killed before this cannot be proven dead later
        params = sample(trial, self.space)
        with _errors_recorded(trial), _trial_run(self.shared, trial, params) as run:
            context = TrialContext(trial.number, run, trial)
            value = self.fn(params, context) if self.with_trial else self.fn(params)
            values = None if context.pruned else _as_values(value, len(self.shared.metric_names))
            _finish(run, "complete" if values else "pruned", values, self.shared.metric_names)
        if values is None:  # raised outside the run's block, so the run ends "finished"
            raise optuna.TrialPruned()
        return values[0] if len(values) == 1 else values


def _takes_two(fn: Callable[..., Any]) -> bool:
    try:
        positional = [
            p for p in inspect.signature(fn).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
        ]  # fmt: skip
    except (TypeError, ValueError):
        return False
    return len(positional) >= 2 or any(p.kind is p.VAR_POSITIONAL for p in positional)


def _as_values(value: Any, count: int) -> list[float]:
    raw = list(value) if isinstance(value, (list, tuple)) else [value]
    if len(raw) != count:
        raise TuneError(
            f"the objective returned {len(raw)} value(s) but the study has {count} "
            f"direction(s); return one number per direction"
        )
    try:
        values = [float(v) for v in raw]
    except (TypeError, ValueError):
        raise TuneError(f"the objective must return numbers, got {value!r}") from None
    if not all(math.isfinite(v) for v in values):
        raise TrainingError(f"the objective returned {values}, which is not finite")
    return values


def check_model_space(space: Space, model: str | None) -> None:
    """Every key of a model-form space must be a fit argument, ``model``, or an argument
    of each zoo model it can be combined with.

    Raises:
        SearchSpaceError: Naming the key and what the model takes instead.
    """
    choice = space.get("model")
    if model is None and choice is None:
        raise SearchSpaceError(
            "say which zoo model to tune: model='mlp', or a 'model' entry in the space "
            "(Categorical(['mlp', 'convnet']))"
        )
    if choice is not None and not isinstance(choice, Categorical):
        raise SearchSpaceError("the space's 'model' entry must be Categorical([...])")
    names = [str(c) for c in choice.choices] if choice is not None else [str(model)]
    for name in names:
        if name not in lp_models.available_models():
            raise SearchSpaceError(
                f"unknown model {name!r}; use one of {', '.join(lp_models.available_models())}"
            )
        keys = {k for k in space if k != "model"}
        if choice is not None:
            keys |= set(choice.when.get(name, {}))
        accepted = set(lp_models.model_parameters(name))
        unknown = sorted(keys - accepted - FIT_KEYS)
        if unknown:
            raise SearchSpaceError(
                f"{unknown} are neither arguments of model {name!r} "
                f"({', '.join(sorted(accepted))}) nor of lp.fit ({', '.join(sorted(FIT_KEYS))})"
            )


def model_config(name: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """The zoo model's arguments from a trial's params. A list argument (``hidden``,
    ``num_filters``) takes a number, which sets the first layer's width and keeps the
    default's ratios (MLP ``hidden=128`` -> ``[128, 128]``; ConvNet ``num_filters=16``
    -> ``[16, 32, 64]``), or a string of widths (``"128,64"``)."""
    defaults = lp_models.model_defaults(name)
    config: dict[str, Any] = {}
    for key, value in params.items():
        if key in FIT_KEYS or key == "model":
            continue
        default = defaults.get(key)
        if isinstance(default, (list, tuple)) and default and isinstance(value, (int, str)):
            if isinstance(value, str):
                try:
                    value = [int(v) for v in value.split(",")]
                except ValueError:
                    raise SearchSpaceError(
                        f"{key}={value!r}: give a width or comma-separated widths like '128,64'"
                    ) from None
            elif all(isinstance(d, int) for d in default):
                value = [max(1, round(value * d / default[0])) for d in default]
        config[key] = value
    return config


class ModelObjective:
    """Builds the sampled zoo model, trains it through ``lp.fit`` on ``train``, reports
    every epoch's ``metric`` on ``val`` to the pruner, and stores the finished weights
    with the trial's run (``model.safetensors`` + ``model.json``)."""

    def __init__(
        self,
        space: Space,
        train: Dataset,
        val: Dataset,
        shared: _Shared,
        *,
        model: str | None,
        metric: str,
        epochs: int,
        fit_options: Mapping[str, Any],
        seed: int,
    ) -> None:
        self.space, self.train, self.val, self.shared = space, train, val, shared
        self.model, self.metric, self.epochs = model, metric, epochs
        self.fit_options, self.seed = dict(fit_options), seed

    def __call__(self, trial: optuna.Trial) -> float:
        optuna = import_optuna()
        mark_owner(trial)  # first: a trial killed before this cannot be proven dead later
        params = sample(trial, self.space)
        name = str(params.get("model", self.model))
        fit_args = {**self.fit_options, **{k: v for k, v in params.items() if k in FIT_KEYS}}
        config = model_config(name, params)
        with (
            _errors_recorded(trial),
            _trial_run(self.shared, trial, {"model": name, **params}) as run,
        ):
            torch.manual_seed(self.seed + trial.number)  # the initial weights differ by trial
            net = build_model(name, self.train, config)
            pruning = PruningCallback(trial, self.metric)
            started = time.perf_counter()
            result = fit(
                net, self.train, self.val, epochs=self.epochs, seed=self.seed + trial.number,
                callbacks=[pruning], quiet=True, **fit_args,
            )  # fmt: skip
            trial.set_user_attr("lepton.epochs", len(result.history))
            trial.set_user_attr("lepton.seconds", time.perf_counter() - started)
            value = result.history[-1].get(self.metric)
            assert value is not None  # the callback checked the metric exists
            if pruning.pruned_at is None:
                state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
                run.log_artifact(safetensors.torch.save(state), name="model.safetensors")
                spec = json.dumps(lp_models.model_spec(net)).encode()
                run.log_artifact(spec, name="model.json")
                _finish(run, "complete", [float(value)], self.shared.metric_names)
            else:
                _finish(run, "pruned", None, ())
        if pruning.pruned_at is not None:  # outside the run's block: the run ends "finished"
            raise optuna.TrialPruned(f"pruned after epoch {pruning.pruned_at}")
        return float(value)
