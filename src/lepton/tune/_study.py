"""``lp.tune``: hyper-parameter search on Optuna, tracked and resumable.

Two forms::

    # any function of the params
    result = lp.tune(objective, {"x": Float(-10, 10)}, n_trials=50, direction="minimize")

    # a zoo model trained with lp.fit; every epoch's val metric goes to the pruner
    result = lp.tune({"hidden": Int(32, 256, log=True), "lr": Float(1e-4, 1e-1, log=True)},
                     train, val, model="mlp", metric="val_accuracy", epochs=5, n_trials=30)

The study is stored in Lepton's metadata database: pass the same ``study=`` name again
to resume it after a crash (trials of a killed process are marked failed, the rest are
kept, and the search continues until the study holds ``n_trials`` finished trials).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import torch

from lepton.data import Dataset
from lepton.errors import TuneError
from lepton.registry._registry import validate_name
from lepton.storage import Database, open_database
from lepton.tracking import Run, resume_run, start_run
from lepton.tune._objective import (
    CAUGHT,
    FunctionObjective,
    ModelObjective,
    _Shared,
    check_model_space,
)
from lepton.tune._optuna import (
    PRUNERS,
    SAMPLERS,
    fail_dead_trials,
    import_optuna,
    make_pruner,
    make_sampler,
    storage_for,
)
from lepton.tune._result import TuneResult, summarize
from lepton.tune._space import Categorical, Space, check_space, space_to_json

__all__ = ["tune"]

Direction = Literal["maximize", "minimize"]
Progress = Callable[[TuneResult], None]
_SPACE_ATTR, _RUN_ATTR = "lepton.space", "lepton.run_id"
MAX_BRANCHES = 8  # branches of one choice queued up front


def tune(
    objective: Callable[..., Any] | Space,
    space: Space | Dataset | None = None,
    val: Dataset | None = None,
    *,
    n_trials: int = 20,
    timeout_s: float | None = None,
    direction: Direction | Sequence[Direction] | None = None,
    sampler: str = "tpe",
    pruner: str = "median",
    seed: int = 0,
    workers: int = 1,
    study: str | None = None,
    model: str | None = None,
    metric: str = "val_accuracy",
    epochs: int = 5,
    fit_options: Mapping[str, Any] | None = None,
    register: str | None = None,
    database: Database | None = None,
    on_trial: Progress | None = None,
) -> TuneResult:
    """Search hyper-parameters with Optuna; every trial is a tracked child run.

    Args:
        objective: A function ``fn(params) -> float`` (or ``fn(params, trial)``, to report
            intermediate values with ``trial.report(value, step)``; a tuple return value
            with a list of directions is multi-objective), or, for the model form, the
            search space over a zoo model's arguments and ``lp.fit``'s (``lr``,
            ``batch_size``, ``optimizer``, ``weight_decay``, ``momentum``, ``schedule``,
            ``grad_clip``), optionally with a ``model`` entry choosing the zoo model.
        space: The function form's search space; the model form's training data.
        val: The model form's validation data (its ``metric`` is what is optimized).
        n_trials: Finished (complete or pruned) trials the study should hold; a resumed
            study only runs the missing ones.
        timeout_s: Stop starting trials after this many seconds.
        direction: ``"maximize"``/``"minimize"`` (default: minimize a metric with "loss"
            in its name, else maximize; minimize for the function form), or one per
            objective.
        sampler: ``"tpe"`` (default), ``"random"``, ``"cmaes"`` or ``"grid"``.
        pruner: ``"median"`` (default), ``"hyperband"`` or ``"none"``.
        seed: Seeds the sampler and, in the model form, each trial's initial weights.
        workers: Trials run in parallel in this many processes (the function form's
            objective must then be importable: defined at a module's top level).
        study: The study's name; an existing study of that name is resumed.
        model: The model form's zoo model when the space has no ``model`` entry.
        metric: The model form's objective: a validation (or training) metric of
            ``lp.fit``'s history, e.g. ``"val_accuracy"`` or ``"val_loss"``.
        epochs: Epochs per trial in the model form (the pruner may stop a trial sooner).
        fit_options: More ``lp.fit`` arguments for every trial (e.g. ``batch_size``).
        register: Register the best model (model form) under this name.
        database: The metadata database (default: ``LEPTON_DATABASE_URL``'s).
        on_trial: Called after every finished trial with the study so far.

    Returns:
        A :class:`~lepton.tune.TuneResult`.

    Raises:
        SearchSpaceError: A malformed space, or keys the model does not take.
        TuneError: Bad arguments, or a study that cannot be resumed as asked.
        MissingExtraError: Optuna is not installed.

    Example:
        >>> from lepton.tune import Float, tune
        >>> result = tune(lambda p: (p["x"] - 2) ** 2, {"x": Float(-10, 10)}, n_trials=30)
        >>> round(result.best_params["x"])  # doctest: +SKIP
        2
    """
    optuna = import_optuna()
    started = time.perf_counter()
    _check_arguments(n_trials, timeout_s, workers, sampler, pruner, epochs)
    model_form = not callable(objective)
    if model_form:
        search = check_space(objective)  # type: ignore[arg-type]
        train = space
        if not isinstance(train, Dataset) or not isinstance(val, Dataset):
            raise TuneError(
                "the model form takes lp.tune(space, train, val, ...) with two Datasets; "
                "for a function objective, pass lp.tune(fn, space, ...)"
            )
        check_model_space(search, model)
    else:
        if not isinstance(space, Mapping):
            raise TuneError("lp.tune(fn, space, ...) needs a search space as its second argument")
        search = check_space(space)
        if register is not None:
            raise TuneError("register= needs the model form (a function objective trains no model)")
    if register is not None:
        validate_name(register)  # before the trials, not after them
    directions = _directions(direction, metric if model_form else None)
    if len(directions) > 1 and pruner != "none":
        raise TuneError("Optuna cannot prune multi-objective studies: pass pruner='none'")
    db = database or open_database()
    name = study or f"tune-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    handle = optuna.create_study(
        study_name=name, storage=storage_for(db), load_if_exists=True,
        directions=directions, sampler=make_sampler(sampler, search, seed),
        pruner=make_pruner(pruner, epochs if model_form else 100),
    )  # fmt: skip
    _same_space(handle, name, search)
    handle.set_user_attr("lepton.metric", metric if model_form else "objective")
    fail_dead_trials(handle)
    if sampler == "tpe" and not handle.get_trials(deepcopy=False):
        _every_branch_first(handle, search)
    names = [metric] if model_form else [f"objective{i}" for i in range(len(directions))]
    names = ["objective"] if names == ["objective0"] else names
    with _study_run(handle, name, db, search, sampler, pruner, n_trials) as run:
        shared = _Shared(name, run.id, db.url, tuple(names))
        target: Callable[..., Any]
        if model_form:
            assert isinstance(train, Dataset)
            assert isinstance(val, Dataset)
            target = ModelObjective(
                search, train, val, shared, model=model, metric=metric, epochs=epochs,
                fit_options=fit_options or {}, seed=seed,
            )  # fmt: skip
        else:
            target = FunctionObjective(objective, search, shared)  # type: ignore[arg-type]
        missing = n_trials - _finished(handle)
        if missing > 0:
            report = _reporter(on_trial, run.id, metric, db, seed, started)
            if workers == 1:
                handle.optimize(
                    target, n_trials=missing, timeout=timeout_s, catch=CAUGHT,
                    callbacks=[report] if report else None,
                )  # fmt: skip
            else:
                _parallel(name, db, search, target, missing, timeout_s, workers, sampler, seed,
                          pruner, epochs if model_form else 100, report)  # fmt: skip
        result = summarize(
            handle, run_id=run.id, metric=metric if model_form else "objective",
            seconds=time.perf_counter() - started, db=db, seed=seed,
        )  # fmt: skip
        _no_success(handle, result)
        # saved, so that reading the study back (dashboard, API) need not recompute them
        handle.set_user_attr(
            "lepton.importances", {"trials": len(result.trials), "values": result.importances}
        )
        if result.best_value is not None:
            run.log_metrics({f"best_{result.metric}": result.best_value}, step=len(result.trials))
        if register is not None:
            result.register(register, dataset=train)
            run.set_tags({"lepton.registered": result.registered})
            handle.set_user_attr("lepton.registered", result.registered)
    return result


def _check_arguments(
    n_trials: int, timeout_s: float | None, workers: int, sampler: str, pruner: str, epochs: int
) -> None:
    if not isinstance(n_trials, int) or not 1 <= n_trials <= 100_000:
        raise TuneError(f"n_trials must be an integer from 1 to 100000, got {n_trials!r}")
    if timeout_s is not None and not timeout_s > 0:
        raise TuneError(f"timeout_s must be > 0 (or None for no limit), got {timeout_s!r}")
    if not isinstance(workers, int) or not 1 <= workers <= 256:
        raise TuneError(f"workers must be an integer from 1 to 256, got {workers!r}")
    if sampler not in SAMPLERS:
        raise TuneError(f"unknown sampler {sampler!r}; use one of {', '.join(SAMPLERS)}")
    if pruner not in PRUNERS:
        raise TuneError(f"unknown pruner {pruner!r}; use one of {', '.join(PRUNERS)}")
    if not isinstance(epochs, int) or epochs < 1:
        raise TuneError(f"epochs must be a positive integer, got {epochs!r}")


def _directions(given: Direction | Sequence[Direction] | None, metric: str | None) -> list[str]:
    if given is None:
        return ["maximize" if metric is not None and "loss" not in metric else "minimize"]
    values: list[str] = [given] if isinstance(given, str) else list(given)
    bad = [d for d in values if d not in ("maximize", "minimize")]
    if bad or not values:
        raise TuneError(f"direction must be 'maximize' or 'minimize' (or a list), got {given!r}")
    return values


def _same_space(handle: Any, name: str, space: Space) -> None:
    wanted = space_to_json(space)
    stored = handle.user_attrs.get(_SPACE_ATTR)
    if stored is None:
        handle.set_user_attr(_SPACE_ATTR, wanted)
    elif stored != wanted:
        raise TuneError(
            f"study {name!r} exists with another search space; resume it with the same "
            f"space, or pass a new study= name"
        )


def _every_branch_first(handle: Any, space: Space) -> None:
    """Queue one trial per branch of each top-level conditional choice (``model=mlp``,
    ``model=convnet``) so TPE's first model of the space has seen every branch; from
    random start-up trials alone it may never try a branch, and never leave the other."""
    for name, param in space.items():
        if isinstance(param, Categorical) and param.when:
            for choice in param.choices[:MAX_BRANCHES]:
                handle.enqueue_trial({name: choice}, skip_if_exists=True)


def _finished(handle: Any) -> int:
    optuna = import_optuna()
    done = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    return len(handle.get_trials(deepcopy=False, states=done))


@contextlib.contextmanager
def _study_run(
    handle: Any, name: str, db: Database, space: Space, sampler: str, pruner: str, n: int
) -> Any:
    """The study's run: started with the study, reopened when it is resumed."""
    run_id = handle.user_attrs.get(_RUN_ATTR)
    run: Run
    if run_id is None:
        run = start_run(
            name,
            params={
                "space": space_to_json(space),
                "sampler": sampler,
                "pruner": pruner,
                "n_trials": n,
            },
            tags={"lepton.kind": "study", "lepton.study": name},
            database=db,
        )
        handle.set_user_attr(_RUN_ATTR, run.id)
    else:
        run = resume_run(int(run_id), database=db)
    with run:
        yield run


def _reporter(
    on_trial: Progress | None, run_id: int, metric: str, db: Database, seed: int, started: float
) -> Callable[[Any, Any], None] | None:
    if on_trial is None:
        return None

    def report(study: Any, _trial: Any) -> None:
        on_trial(
            summarize(
                study,
                run_id=run_id,
                metric=metric,
                db=db,
                seed=seed,
                seconds=time.perf_counter() - started,
            )
        )

    return report


def _no_success(handle: Any, result: TuneResult) -> None:
    """A study whose every trial failed is an error, with the first trial's reason."""
    if result.count("fail") == 0 or result.count("complete") or result.count("pruned"):
        return
    reasons = [t.user_attrs.get("lepton.error") for t in handle.get_trials(deepcopy=False)]
    first = next((r for r in reasons if r), "no reason recorded")
    raise TuneError(
        f"all {result.count('fail')} trials of study {result.study!r} failed; the first: {first}"
    )


# -- parallel trials ----------------------------------------------------------------------
def _worker(
    name: str, url: str, space: Space, target: Callable[..., Any], n_trials: int,
    deadline: float | None, sampler: str, seed: int, pruner: str, steps: int, threads: int,
) -> None:  # fmt: skip
    optuna = import_optuna()
    torch.set_num_threads(threads)
    handle = optuna.load_study(
        study_name=name, storage=storage_for(open_database(url)),
        sampler=make_sampler(sampler, space, seed), pruner=make_pruner(pruner, steps),
    )  # fmt: skip
    finished = optuna.study.MaxTrialsCallback(
        n_trials, states=(optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    )
    timeout = None if deadline is None else max(deadline - time.time(), 0.001)
    handle.optimize(target, n_trials=n_trials, timeout=timeout, catch=CAUGHT, callbacks=[finished])


def _parallel(
    name: str, db: Database, space: Space, target: Callable[..., Any], missing: int,
    timeout_s: float | None, workers: int, sampler: str, seed: int, pruner: str, steps: int,
    report: Callable[[Any, Any], None] | None,
) -> None:  # fmt: skip
    """Run trials in ``workers`` spawned processes sharing the study; the study stops
    when it holds ``missing`` more finished trials (a few running ones may finish too)."""
    optuna = import_optuna()
    total = _finished(optuna.load_study(study_name=name, storage=storage_for(db))) + missing
    deadline = None if timeout_s is None else time.time() + timeout_s
    threads = max(1, torch.get_num_threads() // workers)
    context = multiprocessing.get_context("spawn")
    procs = []
    for i in range(workers):
        # each worker samples with its own seed, or they would all propose the same params
        args = (name, db.url, space, target, total, deadline, sampler, seed + i, pruner, steps,
                threads)  # fmt: skip
        procs.append(context.Process(target=_worker, args=args, daemon=True))
    try:
        for proc in procs:
            proc.start()
    except (TypeError, AttributeError) as exc:  # the objective could not be sent to a worker
        raise TuneError(
            f"workers={workers} sends the objective to worker processes, and it cannot be "
            f"sent ({exc}); define it at a module's top level, or use workers=1"
        ) from None
    seen = -1
    try:
        while any(p.is_alive() for p in procs):
            for proc in procs:
                proc.join(timeout=0.5)
            if report is not None:
                handle = optuna.load_study(study_name=name, storage=storage_for(db))
                count = len(handle.get_trials(deepcopy=False))
                if count != seen:
                    seen = count
                    report(handle, None)
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.terminate()
            proc.join(timeout=10)
    failed = [p.exitcode for p in procs if p.exitcode not in (0, None)]
    if failed and _finished(optuna.load_study(study_name=name, storage=storage_for(db))) < total:
        raise TuneError(f"{len(failed)} tuning worker(s) failed (exit codes {failed}); see above")
