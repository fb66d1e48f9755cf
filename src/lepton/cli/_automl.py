"""``lepton automl``: find a model for a table within a time budget."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from lepton import data as lp_data
from lepton.errors import DataFormatError, TuneError

__all__ = ["automl"]

console = Console(highlight=False, soft_wrap=True)
_FILE_LOADERS = {".csv": "from_csv", ".parquet": "from_parquet", ".npz": "from_npz"}


def _load(data: str, target: str | None, task: str | None) -> tuple[lp_data.Dataset, Any]:
    """The training Dataset and, for a catalog dataset, its test split (else None)."""
    path = Path(data)
    if path.suffix.lower() in _FILE_LOADERS:
        loader = getattr(lp_data, _FILE_LOADERS[path.suffix.lower()])
        kwargs: dict[str, Any] = {"task": task}
        if path.suffix.lower() != ".npz":
            kwargs["target"] = target if target is not None else -1
        elif target is not None:
            kwargs["targets_key"] = target
        return loader(path, **kwargs), None
    if path.exists():
        raise DataFormatError(
            f"{data} is not a .csv, .parquet or .npz file; convert it, or pass a catalog "
            f"dataset name (`lepton data list`)"
        )
    return lp_data.load(data, split="train"), lp_data.load(data, split="test")


def automl(
    data: str = typer.Argument(
        ...,
        help="A catalog dataset (`lepton data list`: breast-cancer, wine, digits, diabetes, "
        "iris, ...) or a .csv / .parquet / .npz file.",
    ),
    target: str | None = typer.Option(
        None, help="Target column of a CSV/Parquet file (default: the last), or NPZ array."
    ),
    task: str | None = typer.Option(
        None, help="classification or regression (default: inferred from the target)."
    ),
    budget: float = typer.Option(
        60.0, "--budget", "-b", help="Seconds for everything: selection, search and refit."
    ),
    metric: str | None = typer.Option(
        None,
        help="accuracy (default), balanced_accuracy, f1, roc_auc, neg_log_loss; r2 "
        "(default), neg_rmse, neg_mae for regression.",
    ),
    cv: int = typer.Option(5, help="Cross-validation folds (stratified for classes)."),
    family: list[str] = typer.Option(
        [], "--family", "-f", help="Search only these: linear, hgb, lightgbm, mlp (repeat)."
    ),
    register: str | None = typer.Option(
        None, help="Register the winning pipeline under this model name."
    ),
    seed: int = typer.Option(0, help="Seed for the folds, the samplers and the models."),
    jobs: int = typer.Option(1, "--jobs", "-j", help="Threads per fit."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON only."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only the final summary."),
) -> None:
    """Search preprocessing, features and model families for a table, within a budget.

    Each column is imputed (median + missing indicator), standardized, and integer codes
    with few levels one-hot encoded; mutual information, L1 and permutation importance
    vote on the features; then logistic/linear regression, an MLP (trained by lp.fit),
    scikit-learn's HistGradientBoosting and LightGBM are tuned with Optuna (TPE) under
    cross-validation (a holdout for large tables), the budget split between them as
    they compete. The winner (the simplest configuration within one standard error of
    each family's best, combined by greedy ensemble selection) is refit on all rows as
    one pipeline module: register it with --register, then `lepton serve NAME:1`.

    Example: `lepton automl breast-cancer --budget 30 --register cancer-automl`.
    """
    from lepton.tune import automl as run_automl

    if task not in (None, "classification", "regression"):
        raise TuneError(f"--task must be classification or regression, got {task!r}")
    train, test = _load(data, target, task)
    result = run_automl(
        train, task=task, budget_s=budget, metric=metric, seed=seed, cv=cv,
        register=register, quiet=quiet or as_json, families=family or None, n_jobs=jobs,
    )  # fmt: skip
    test_score = result.score(test) if test is not None else None
    if as_json:
        print(json.dumps(_summary(result, test_score), indent=2))
        return
    if quiet:
        console.print(result.summary())
    else:
        console.print(result.features.table(limit=15))
    if test_score is not None:
        console.print(
            f"held-out test {result.best.metric} ({data}, {len(test)} rows): {test_score:.4f}"
        )


def _summary(result: Any, test_score: float | None) -> dict[str, Any]:
    return {
        "best": {
            "family": result.best.family,
            "params": result.best.params,
            "metric": result.best.metric,
            "cv_score": result.best.score,
            "cv_std": result.best.std,
        },
        "test_score": test_score,
        "seconds": result.seconds,
        "budget_s": result.budget_s,
        "features": {
            "kept": result.features.kept,
            "dropped": result.features.dropped,
            "notes": result.features.notes,
        },
        "leaderboard": result.leaderboard.to_dicts(),
        "notes": result.notes,
        "registered": result.version.ref if result.version is not None else None,
    }
