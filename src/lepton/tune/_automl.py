"""``lp.automl``: preprocessing, feature selection and model-family search on a time budget.

The steps, in order, all inside ``budget_s``:

1. check the data and the arguments (``_automl_data``);
2. decide each column's preprocessing (``_automl_prep``);
3. vote on the features with three methods, in at most 10% of the budget
   (``_automl_select``);
4. search the model families with cross-validation, one Optuna TPE study each, until
   the time left only fits the refit (``_automl_search``);
5. choose an ensemble of trials by greedy selection on their validation predictions
   (``_automl_ensemble``; often a single trial), refit its members on all rows and make
   one ``TabularPipeline`` module of it: preprocessing buffers and a linear, MLP,
   tree-ensemble or weighted-ensemble head, stored without pickle (``_automl_build``).

Data too large for the budget to afford cross-validation is scored on a holdout instead
(the first of the ``cv`` folds): FLAML's rule, holdout when ``rows >= 100,000`` or
``rows x columns / 0.9 >= 1e7 x budget_s / 3600``. Many configurations scored on one
large validation fold beat a few scored on five.
"""

from __future__ import annotations

import contextvars
import time
from typing import Any

import numpy as np
import numpy.typing as npt
from rich.console import Console

from lepton.data import Dataset
from lepton.errors import MissingExtraError, TuneError
from lepton.tune._automl_build import assemble, ensemble_scores, refit
from lepton.tune._automl_data import Metric, Table, as_table, check_metric
from lepton.tune._automl_ensemble import select_ensemble
from lepton.tune._automl_families import FAMILIES, available_families
from lepton.tune._automl_family import Context
from lepton.tune._automl_leaderboard import TrialRow
from lepton.tune._automl_prep import plan_columns
from lepton.tune._automl_result import AutoMLResult, Best
from lepton.tune._automl_search import Search
from lepton.tune._automl_select import select_features

__all__ = ["AutoMLResult", "automl"]

HOLDOUT_ROWS = 100_000
HOLDOUT_CELLS_PER_HOUR = 1e7
SELECTION_SHARE = 0.10  # of the budget, at most, for feature selection


def _check_args(budget_s: Any, cv: Any, seed: Any, n_jobs: Any, families: Any) -> None:
    example = "lp.automl(data, budget_s=60, cv=5, seed=0)"
    if isinstance(budget_s, bool) or not isinstance(budget_s, (int, float)) or not budget_s > 0:
        raise TuneError(f"budget_s must be a number of seconds > 0, got {budget_s!r}; {example}")
    if isinstance(cv, bool) or not isinstance(cv, int) or cv < 2:
        raise TuneError(f"cv must be an int >= 2 (folds), got {cv!r}; {example}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TuneError(f"seed must be an int, got {seed!r}; {example}")
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, int) or n_jobs < 1:
        raise TuneError(f"n_jobs must be an int >= 1, got {n_jobs!r}")
    if families is not None:
        unknown = [f for f in families if f not in FAMILIES]
        if unknown or not families:
            raise TuneError(
                f"families must be a non-empty list from {list(FAMILIES)}, got {families!r}"
            )


def _require_optuna() -> None:
    try:
        import optuna  # noqa: F401
    except ImportError:
        raise MissingExtraError(
            "lp.automl needs Optuna: pip install 'lepton[automl]' (Optuna and LightGBM)"
        ) from None


def _folds(
    y: npt.NDArray[Any], cv: int, classify: bool, seed: int, holdout: bool
) -> list[tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]]:
    from sklearn.model_selection import KFold, StratifiedKFold

    if classify:
        splits = min(cv, int(np.bincount(y).min()))
        splitter: Any = StratifiedKFold(splits, shuffle=True, random_state=seed)
    else:
        splitter = KFold(min(cv, len(y)), shuffle=True, random_state=seed)
    folds = list(splitter.split(np.zeros((len(y), 1)), y))
    return folds[:1] if holdout else folds


class _Progress:
    """Prints the search as it goes: each family's first trial, every new best."""

    def __init__(self, console: Console | None, started: float) -> None:
        self.console, self.started = console, started
        self.seen: set[str] = set()
        self.best: TrialRow | None = None

    def say(self, text: str) -> None:
        if self.console is not None:
            self.console.print(f"[dim]{time.perf_counter() - self.started:6.1f}s[/] {text}")

    def __call__(self, row: TrialRow, best: TrialRow | None) -> None:
        first = row.family not in self.seen
        self.seen.add(row.family)
        improved = best is not None and best is row and row is not self.best
        if first or improved:
            score = f"{row.score:.4f} ± {row.std:.4f}" if row.state == "complete" else row.state
            lead = f"best so far: {best.family} {best.score:.4f}" if best else "no best yet"
            mark = "[green]new best[/] " if improved else ""
            self.say(f"{row.family:<9} trial {row.number:>3}: {score}  {mark}({lead})")
        if improved:
            self.best = row


def automl(
    data: Dataset | tuple[Any, Any],
    task: str | None = None,
    budget_s: float = 60,
    metric: str | None = None,
    seed: int = 0,
    cv: int = 5,
    register: str | None = None,
    quiet: bool = False,
    *,
    families: list[str] | None = None,
    n_jobs: int = 1,
) -> AutoMLResult:
    """Find a good model for a table within a time budget, and return it as a pipeline.

    Args:
        data: A Lepton ``Dataset`` with targets, or an ``(X, y)`` pair (numpy, torch,
            lists, or a pandas DataFrame / Series; ``category`` columns become codes).
        task: ``"classification"``, ``"regression"``, or None to infer it (from the
            Dataset, or from ``y``: floats mean regression, anything else classes).
        budget_s: Seconds for everything (preprocessing, selection, search, refit);
            kept within 10%.
        metric: What to maximise: ``accuracy`` (default), ``balanced_accuracy``, ``f1``,
            ``roc_auc``, ``neg_log_loss`` for classification; ``r2`` (default),
            ``neg_rmse``, ``neg_mae`` for regression.
        seed: Seeds the folds, the samplers and every model.
        cv: Cross-validation folds (stratified for classification).
        register: Register the winner under this model name.
        quiet: Print nothing.
        families: Restrict the search, e.g. ``["linear", "hgb"]`` (default: linear, hgb,
            lightgbm when installed, mlp).
        n_jobs: Threads per fit (default 1: steady timing on a shared machine; raise it
            on a machine of your own).

    Returns:
        An :class:`AutoMLResult`; ``result.model`` is the winning ``nn.Module``.

    Raises:
        TuneError: A bad task, budget, cv, seed, metric or family name.
        DataFormatError: X and y of different lengths, or non-numeric columns.
        LabelError: Unusable targets (NaN, one class, a class with a single row).
        MissingExtraError: Optuna is not installed.

    Example:
        >>> import lepton as lp
        >>> train = lp.data.load("wine", split="train")
        >>> result = lp.automl(train, budget_s=30)  # doctest: +SKIP
        >>> result.score(lp.data.load("wine", split="test"))  # doctest: +SKIP
        0.97...
        >>> result.register("wine-automl")  # doctest: +SKIP
    """
    started = time.perf_counter()
    _check_args(budget_s, cv, seed, n_jobs, families)
    table = as_table(data, task, min_per_class=2)
    chosen = check_metric(metric, table.task)
    if register is not None:
        from lepton.registry._registry import validate_name

        validate_name(register)  # before the search, not after it
    _require_optuna()
    console = None if quiet else Console(stderr=True, highlight=False)
    from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

    # OpenMP pools that spin for busy cores cost seconds per fit on a shared machine, so
    # every library (scikit-learn, LightGBM, BLAS) gets exactly n_jobs threads; and
    # trials must not log into a run the caller has open: a fresh context has none
    with threadpool_limits(n_jobs):
        result = contextvars.Context().run(
            _run, table, chosen, float(budget_s), seed, cv, families, n_jobs, started, console
        )
    result.lineage = data if _same_classes(data, table) else table.dataset  # type: ignore[assignment]
    if register is not None:
        version = result.register(register)
        if console is not None:
            console.print(f"registered as {version.ref} (lp.load_model({version.ref!r}))")
    return result


def _same_classes(data: Any, table: Table) -> bool:
    """Whether ``data`` (a Dataset) describes the pipeline's outputs as they are."""
    if not isinstance(data, Dataset):
        return False
    if table.task == "regression":
        return True
    return table.classes is not None and len(data.classes or []) == len(table.classes)


def _run(
    table: Table,
    metric: Metric,
    budget_s: float,
    seed: int,
    cv: int,
    names: list[str] | None,
    n_jobs: int,
    started: float,
    console: Console | None,
) -> AutoMLResult:
    deadline = started + budget_s
    families, notes = available_families(names)
    say = _Progress(console, started)
    classify = table.task == "classification"
    rows, width = table.x.shape
    cells_per_hour = rows * width / 0.9 / (budget_s / 3600)
    holdout = rows >= HOLDOUT_ROWS or cells_per_hour >= HOLDOUT_CELLS_PER_HOUR
    scheme = f"holdout (1 of {cv} folds)" if holdout else f"{cv}-fold CV"
    say.say(f"{table.task} on {table.dataset.name!r}: {rows} rows, {width} columns; "
            f"{metric.name}, {scheme}, budget {budget_s:g}s")  # fmt: skip

    plan = plan_columns(table.x, table.input_names)
    z_all = plan.transform(table.x)
    kept, report = select_features(
        z_all, table.y, plan.feature_names, classify=classify, seed=seed,
        until=started + SELECTION_SHARE * budget_s, n_jobs=n_jobs,
    )  # fmt: skip
    report.columns = dict(plan.kinds)
    skipped = f" ({report.notes[0]})" if report.notes else ""
    say.say(f"features: {len(kept)} of {z_all.shape[1]} kept by mutual information, L1 and "
            f"permutation importance{skipped}")  # fmt: skip
    matrices = {"selected": z_all[:, kept]}
    if len(kept) < z_all.shape[1]:
        matrices["all"] = z_all

    for note in notes:
        say.say(note)
    num_classes = len(table.classes) if table.classes is not None else None
    ctx = Context(table.task, num_classes, seed, n_jobs)  # type: ignore[arg-type]
    search = Search(
        matrices, table.y, _folds(table.y, cv, classify, seed, holdout), families, ctx,
        metric, deadline, budget_s, margin=0.2 + 0.02 * budget_s, on_trial=say,
    )  # fmt: skip
    search.board.validation = scheme
    board = search.run()
    if search.best() is None:
        failed = [r.note for r in board.rows if r.state == "failed"]
        raise TuneError(
            f"no trial finished within budget_s={budget_s:g}"
            + (f" (first failure: {failed[0]})" if failed else "")
            + "; raise budget_s, or restrict families (e.g. families=['linear'])"
        )

    y_validated = table.y[search.validated]
    members, _ = select_ensemble(
        board.completed, search.predictions, y_validated, metric, classify,
        lambda row: FAMILIES[row.family].complexity(
            {k: v for k, v in row.params.items() if k != "features"}),
    )  # fmt: skip
    fitted = refit(members, matrices, table.y, ctx, search, deadline, notes)
    pipeline = assemble(fitted, plan, kept, num_classes)
    if len(fitted) == 1:
        trial = fitted[0].member.trial
        family, params, score, std = trial.family, dict(trial.params), trial.score, trial.std
    else:
        score, std = ensemble_scores(fitted, search, metric)
        family = "ensemble"
        params = {f"{r.member.trial.family} #{r.member.trial.number}": round(r.weight, 3)
                  for r in fitted}  # fmt: skip
    best = Best(family, params, score, std, metric.name, [
        {"family": r.member.trial.family, "trial": r.member.trial.number,
         "weight": r.weight, "params": dict(r.member.trial.params)} for r in fitted
    ])  # fmt: skip
    seconds = time.perf_counter() - started
    say.say(f"winner: {family} {params if family == 'ensemble' else ''} {metric.name} "
            f"{score:.4f} ± {std:.4f}; {len(board.rows)} trials; done in {seconds:.1f}s of "
            f"{budget_s:g}s")  # fmt: skip
    if console is not None:
        console.print(board.table())
    return AutoMLResult(
        model=pipeline,
        leaderboard=board,
        best=best,
        features=report,
        seconds=seconds,
        budget_s=budget_s,
        task=table.task,
        classes=table.classes,
        table=table,
        lineage=table.dataset,
        notes=notes,
    )
