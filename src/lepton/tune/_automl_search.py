"""The budgeted search over model families: one Optuna study (TPE, seeded) per family.

How the time budget is kept:

1. every family's default configuration runs first (cheapest family first), which also
   measures each family's speed (seconds per unit of ``Family.work``);
2. then the next family is the one that has had the least time relative to its weight
   (the leader weighs 2, a family far behind the leader after 5 trials 0.25), so time
   flows to what is winning without starving the others;
3. a trial starts only if its estimated cost (learned speed x its work) fits before the
   *search end*: the deadline minus a reserve for refitting the current best on all
   rows; a fit that overruns anyway is stopped at the search end by the family's
   deadline hook and its trial is discarded;
4. folds are scored one by one and reported to Optuna's median pruner, which stops
   trials whose running mean trails the family's median.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from lepton.tune._automl_data import Metric, metric_value
from lepton.tune._automl_family import Context, Family
from lepton.tune._automl_leaderboard import Leaderboard, TrialRow

__all__ = ["Search"]

Matrix = npt.NDArray[np.float64]
Folds = list[tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]]


@dataclass
class _Arm:
    """One family's study and what the search has learned about it."""

    family: Family
    study: Any
    spent: float = 0.0
    overhead: float = 0.0  # seconds a fit costs whatever its work
    rates: list[float] = field(default_factory=list)  # seconds per unit of work beyond it
    measured: bool = False  # a real fold has been timed (not only probes)
    trial_seconds: list[float] = field(default_factory=list)
    best: TrialRow | None = None
    trials: int = 0
    failures_in_a_row: int = 0
    too_slow_in_a_row: int = 0
    retired: bool = False

    def fold_estimate(self, work: float) -> float | None:
        """Seconds one fold of ``work`` should take (None before any measurement)."""
        if not self.rates:
            return None
        return 1.25 * (self.overhead + float(np.median(self.rates[-10:])) * work)

    def record(self, seconds: float, work: float) -> None:
        """Learn from a fit of ``work`` that took ``seconds``."""
        self.rates.append(max(seconds - self.overhead, 0.0) / max(work, 1.0))


class _TrialEndedError(Exception):
    """A trial ends early; ``state`` says how."""

    def __init__(self, state: str, note: str = "") -> None:
        self.state, self.note = state, note


class Search:
    """Runs trials across families until the budget's search end.

    Args:
        matrices: ``{"selected": z, "all": z}`` feature matrices (``"all"`` only when
            selection dropped something; then it is a searched choice).
        y: Targets.
        folds: (train rows, validation rows) of each fold.
        families: The families to search, cheapest first.
        ctx: Task, classes, seed and threads.
        metric: The metric to maximise.
        deadline: ``time.perf_counter()`` value by which everything must be done.
        budget_s: The whole budget, of which at most a quarter is kept for refitting
            ensemble members other than the best.
        margin: Seconds kept back for building the pipeline after the refit.
        on_trial: Called with each finished trial and the best one so far.
    """

    LINEAR_TRIALS = 30  # a one-parameter space is saturated long before this

    def __init__(
        self,
        matrices: dict[str, Matrix],
        y: npt.NDArray[Any],
        folds: Folds,
        families: list[Family],
        ctx: Context,
        metric: Metric,
        deadline: float,
        budget_s: float,
        margin: float,
        on_trial: Callable[[TrialRow, TrialRow | None], None] | None = None,
    ) -> None:
        import optuna

        self.matrices, self.y, self.folds, self.ctx, self.metric = matrices, y, folds, ctx, metric
        self.deadline, self.margin, self.on_trial = deadline, margin, on_trial
        self.budget_s = budget_s
        self.fold_rows = len(folds[0][0])
        # every complete trial's predictions on the validation rows of all folds, in
        # this order: what ensemble selection combines
        self.validated = np.concatenate([rows for _, rows in folds])
        self.predictions: dict[int, Matrix] = {}
        # the model each complete trial fit on its first fold (the best few per family):
        # the fallback when refitting on every row would not fit in the budget
        self.fold_models: dict[int, Any] = {}
        self.board = Leaderboard(metric.name)
        self.arms: list[_Arm] = []
        optuna.logging.set_verbosity(optuna.logging.ERROR)
        for i, family in enumerate(families):
            study = optuna.create_study(
                direction="maximize",
                sampler=optuna.samplers.TPESampler(seed=ctx.seed + i, n_startup_trials=5),
                pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=0),
            )
            self.arms.append(_Arm(family, study))

    # -- time ----------------------------------------------------------------------------
    def refit_seconds(self, row: TrialRow) -> float:
        """Estimated seconds to refit ``row``'s configuration on every row."""
        grow = len(self.y) / self.fold_rows
        return 1.3 * row.seconds / max(row.folds, 1) * grow

    def search_end(self) -> float:
        """When trials must stop: the deadline less the refits of the likely ensemble
        (each family's best; at most a quarter of the budget beyond the best's own)."""
        best = self.best()
        if best is None:
            return self.deadline - self.margin
        others = sum(self.refit_seconds(a.best) for a in self.arms if a.best not in (None, best))
        refit = self.refit_seconds(best) + min(others, 0.25 * self.budget_s)
        return self.deadline - self.margin - refit

    def best(self) -> TrialRow | None:
        """The best completed trial so far."""
        done = [a.best for a in self.arms if a.best is not None]
        return max(done, key=lambda r: r.score) if done else None

    # -- the loop ------------------------------------------------------------------------
    def run(self) -> Leaderboard:
        """Run trials until no family's next trial fits; return the leaderboard."""
        for arm in self.arms:  # round 1: every family's defaults
            left = self.search_end() - time.perf_counter()
            if left > 0 and arm.family.can_start(left):
                self._trial(arm)
        while True:
            chosen = self._next_arm()
            if chosen is None:
                break
            self._trial(chosen)
        return self.board

    def _weight(self, arm: _Arm) -> float:
        best = self.best()
        if arm.best is None or best is None:
            return 1.0
        if arm.best is best:
            return 2.0
        spread = max(best.std / math.sqrt(max(best.folds, 1)), 1e-3)
        far_behind = best.score - arm.best.score > 3 * spread
        return 0.25 if far_behind and arm.trials >= 5 else 1.0

    def _next_arm(self) -> _Arm | None:
        remaining = self.search_end() - time.perf_counter()
        fits = []
        for arm in self.arms:
            if arm.retired or remaining <= 0:
                continue
            if arm.trials == 0 and not arm.family.can_start(remaining):
                continue
            typical = float(np.median(arm.trial_seconds)) if arm.trial_seconds else 0.0
            if typical > remaining and arm.too_slow_in_a_row >= 1:
                continue
            fits.append(arm)
        if not fits:
            return None
        return min(fits, key=lambda a: (a.spent / self._weight(a), a.trials))

    def _trial(self, arm: _Arm) -> None:
        import optuna

        started = time.perf_counter()
        if arm.trials == 0:  # one-time costs, counted as the family's time but not timed
            arm.family.warm_up()
            self._first(arm, self.matrices["selected"])
        trial = arm.study.ask()
        params = arm.family.suggest(trial, self.fold_rows, self.ctx)
        subset = "selected"
        if len(self.matrices) > 1:
            subset = trial.suggest_categorical("features", ["selected", "all"])
            params["features"] = subset
        z = self.matrices[subset]
        row = TrialRow(len(self.board.rows) + 1, arm.family.name, params)
        arm.trials += 1
        try:
            scores, predictions, first_model = self._folds(arm, trial, params, z, row)
        except _TrialEndedError as stop:
            row.state, row.note = stop.state, stop.note
        except Exception as exc:  # a family's failure must not end the search
            row.state, row.note = "failed", f"{type(exc).__name__}: {exc}"
        else:
            row.score, row.std = float(np.mean(scores)), float(np.std(scores))
            self.predictions[row.number] = predictions
            self._keep(row, first_model)
        arm.spent += time.perf_counter() - started
        arm.too_slow_in_a_row = arm.too_slow_in_a_row + 1 if row.state == "out of time" else 0
        arm.failures_in_a_row = arm.failures_in_a_row + 1 if row.state == "failed" else 0
        if (
            arm.failures_in_a_row >= 3
            or arm.too_slow_in_a_row >= 3  # its configurations no longer fit the time left
            or (arm.family.name == "linear" and arm.trials >= self.LINEAR_TRIALS)
        ):
            arm.retired = True
        if row.state == "complete":
            arm.study.tell(trial, row.score)
            arm.trial_seconds.append(time.perf_counter() - started)
            if arm.best is None or row.score > arm.best.score:
                arm.best = row
        else:
            failed = row.state == "failed"
            state = optuna.trial.TrialState.FAIL if failed else optuna.trial.TrialState.PRUNED
            arm.study.tell(trial, state=state)
        self.board.rows.append(row)
        if self.on_trial is not None:
            self.on_trial(row, self.best())

    def _probe(self, arm: _Arm, params: dict[str, Any], z: Matrix) -> None:
        """Time two cheap variants (1x and 3x the work) on the first fold: the difference
        is the family's speed, the rest its fixed cost per fit."""
        small, large = arm.family.probe(params, 1), arm.family.probe(params, 3)
        if small is None or large is None:
            return
        rows = self.folds[0][0]
        times, works = [], []
        for cheap in (small, large):
            began = time.perf_counter()
            arm.family.fit(cheap, z[rows], self.y[rows], self.ctx, self.search_end())
            times.append(time.perf_counter() - began)
            works.append(arm.family.work(cheap, self.fold_rows, z.shape[1], self.ctx))
        rate = (times[1] - times[0]) / max(works[1] - works[0], 1.0)
        rate = rate if rate > 0 else times[1] / max(works[1], 1.0)  # noise: no overhead
        arm.overhead = max(times[1] - rate * works[1], 0.0)
        arm.rates.append(rate)

    def _first(self, arm: _Arm, z: Matrix) -> None:
        """The family's default configuration, shrunk to fit its share of the time left
        (an equal share with each family yet to start, and one for the search after)."""
        params = arm.family.defaults(self.fold_rows, self.ctx)
        self._probe(arm, params, z)
        work = arm.family.work(params, self.fold_rows, z.shape[1], self.ctx)
        estimate = arm.fold_estimate(work)
        waiting = sum(1 for a in self.arms if a.trials == 0)  # this one included
        allowed = (self.search_end() - time.perf_counter()) / (waiting + 1) / len(self.folds)
        if estimate is not None and estimate > allowed > arm.overhead:
            share = (allowed / 1.25 - arm.overhead) / max(estimate / 1.25 - arm.overhead, 1e-9)
            params = arm.family.shrink(params, share)
        if len(self.matrices) > 1:
            params["features"] = "selected"
        arm.study.enqueue_trial(params)

    def _folds(
        self, arm: _Arm, trial: Any, params: dict[str, Any], z: Matrix, row: TrialRow
    ) -> tuple[list[float], Matrix, Any]:
        family_params = {k: v for k, v in params.items() if k != "features"}
        work = arm.family.work(family_params, self.fold_rows, z.shape[1], self.ctx)
        scores: list[float] = []
        parts: list[Matrix] = []
        first_model: Any = None
        for i, (fit_rows, val_rows) in enumerate(self.folds):
            end = self.search_end()
            left = len(self.folds) - i
            estimate = arm.fold_estimate(work)
            if estimate is not None and time.perf_counter() + estimate * left > end:
                more = f"~{estimate * left:.1f}s more would pass the budget"
                raise _TrialEndedError("out of time", more)
            began = time.perf_counter()
            model, cut = arm.family.fit(family_params, z[fit_rows], self.y[fit_rows],
                                        self.ctx, end)  # fmt: skip
            seconds = time.perf_counter() - began
            if cut:
                raise _TrialEndedError("out of time", "stopped at the search's end")
            arm.record(seconds, work)
            row.seconds += seconds
            predictions = arm.family.predict(model, z[val_rows], self.ctx)
            score = metric_value(self.metric, self.y[val_rows], predictions)
            if not math.isfinite(score):
                undefined = f"{self.metric.name} is undefined on fold {i + 1}"
                raise _TrialEndedError("failed", undefined)
            scores.append(score)
            parts.append(predictions)
            first_model = model if first_model is None else first_model
            row.folds += 1
            trial.report(float(np.mean(scores)), i)
            if trial.should_prune():
                raise _TrialEndedError("pruned", f"after {i + 1} fold(s)")
        return scores, np.concatenate(parts), first_model

    KEPT_MODELS = 8  # per family

    def _keep(self, row: TrialRow, model: Any) -> None:
        self.fold_models[row.number] = model
        family = sorted(
            (r for r in [*self.board.rows, row]
             if r.family == row.family and r.number in self.fold_models),
            key=lambda r: -r.score,
        )  # fmt: skip
        for extra in family[self.KEPT_MODELS :]:
            del self.fold_models[extra.number]
