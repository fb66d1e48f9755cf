"""``lepton tune``: search a zoo model's hyper-parameters on a catalog dataset (Optuna),
with live progress; ``--list`` and ``--show`` read studies back."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from lepton.errors import ConfigError
from lepton.tune import TuneResult, get_study, list_studies, parse_space, space_to_json
from lepton.tune.recipe import TuneConfig
from lepton.tune.recipe import run as run_recipe

__all__ = ["tune"]

console = Console(highlight=False, soft_wrap=True)
DEFAULT = TuneConfig.model_construct()  # every default once, in the recipe
TOP = 10


def _space(params: list[str], space_file: Path | None) -> dict[str, Any]:
    if space_file is not None and params:
        raise ConfigError("give the search space with --param or with --space FILE, not both")
    if space_file is not None:
        try:
            raw = json.loads(space_file.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"cannot read the search space from {space_file}: {exc}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{space_file} must hold a JSON object of parameters")
        return raw
    if not params:
        raise ConfigError(
            "say what to search: --param 'lr=log(1e-4,1e-1)' --param 'hidden=intlog(16,256)' "
            "(or --space space.json); see `lepton tune --help`"
        )
    return space_to_json(parse_space(params))


def _trials_table(result: TuneResult) -> Table:
    sign = -1.0 if result.directions[0] == "maximize" else 1.0
    done = [t for t in result.trials if t.value is not None]
    ranked = sorted(done, key=lambda t: sign * (t.value or 0.0))[:TOP]
    table = Table(title=f"best {len(ranked)} of {len(result.trials)} trials", title_justify="left")
    for column in ("trial", "state", result.metric, "epochs", "params"):
        table.add_column(column, justify="right" if column != "params" else "left")
    for t in ranked:
        params = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                           for k, v in t.params.items())  # fmt: skip
        table.add_row(str(t.number), t.state, f"{t.value:.4f}", str(t.epochs or "-"), params)
    return table


def _show(result: TuneResult) -> None:
    console.print(_trials_table(result))
    console.print(result.summary())
    console.print(
        f"study run: `lepton runs show {result.run_id}`; its trials are child runs; "
        f"dashboard: /studies/{result.study}"
    )


def _list() -> None:
    table = Table(title="tuning studies", title_justify="left")
    for column in ("study", "trials", "best", "run"):
        table.add_column(column)
    for s in list_studies():
        best = f"{s.best_value:.4f}" if s.best_value is not None else "-"
        table.add_row(s.name, str(s.trials), best, str(s.run_id or "-"))
    console.print(table)


def tune(
    model: str | None = typer.Option(
        DEFAULT.model, "--model", "-m", help="Zoo model (or a `model=choice(...)` --param)."
    ),
    data: str = typer.Option(DEFAULT.data, "--data", "-d", help="Catalog dataset."),
    param: list[str] = typer.Option(
        [],
        "--param",
        "-p",
        help="A searched parameter: `lr=log(1e-4,1e-1)`, `hidden=intlog(16,256)`, "
        "`dropout=float(0,0.5)`, `optimizer=choice(adamw,sgd)`, and conditional ones: "
        "`momentum=float(0.5,0.99) if optimizer=sgd`. Repeat for each.",
    ),
    space: Path | None = typer.Option(None, help="The search space as a JSON file instead."),
    trials: int = typer.Option(DEFAULT.n_trials, "--trials", "-n", help="Trials the study holds."),
    epochs: int = typer.Option(DEFAULT.epochs, help="Epochs per trial (pruning may stop one)."),
    batch_size: int = typer.Option(DEFAULT.batch_size, help="Batch size (unless searched)."),
    metric: str = typer.Option(DEFAULT.metric, help="What to optimize, e.g. val_loss."),
    sampler: str = typer.Option(DEFAULT.sampler, help="tpe, random, cmaes or grid."),
    pruner: str = typer.Option(DEFAULT.pruner, help="median, hyperband or none."),
    timeout: float | None = typer.Option(None, help="Stop starting trials after N seconds."),
    workers: int = typer.Option(DEFAULT.workers, help="Trials in parallel (processes)."),
    seed: int = typer.Option(DEFAULT.seed, help="Seeds the sampler and the trials' weights."),
    study: str | None = typer.Option(None, help="Study name; an existing one is resumed."),
    register: str | None = typer.Option(None, help="Register the best model under this name."),
    limit: int | None = typer.Option(None, help="Use the first N training rows."),
    list_: bool = typer.Option(False, "--list", help="List the studies and exit."),
    show: str | None = typer.Option(None, help="Show a study's trials and exit."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON only."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress output."),
) -> None:
    """Search hyper-parameters of a zoo model with Optuna (TPE and pruning by default).

    Each trial trains the model with `lp.fit`, reports every epoch's validation metric to
    the pruner (poor trials stop early), and is tracked as a child run of the study's
    run. The study is stored in Lepton's database: run the same command with the same
    `--study` again to resume it after a crash.

    Example: `lepton tune -m mlp -d digits -p 'lr=log(1e-4,1e-1)' -p 'hidden=intlog(16,256)'
    -n 20 --register digits-mlp`.
    """
    if list_:
        _list()
        return
    if show is not None:
        found = get_study(show)
        if as_json:
            print(json.dumps(found.to_dict(), indent=2))
        else:
            _show(found)
        return
    config = TuneConfig.checked(
        model=model, space=_space(param, space), data=data, limit=limit, epochs=epochs,
        batch_size=batch_size, metric=metric, n_trials=trials, timeout_s=timeout,
        sampler=sampler, pruner=pruner, seed=seed, workers=workers, study=study,
        register=register,
    )  # fmt: skip
    if quiet or as_json:
        result = run_recipe(config)
    else:
        columns = (
            TextColumn("[bold]tuning[/]"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.description}"), TimeElapsedColumn(),
        )  # fmt: skip
        with Progress(*columns, console=console, transient=True) as progress:
            task = progress.add_task("starting", total=trials)

            def on_trial(so_far: TuneResult) -> None:
                best = f"best {so_far.best_value:.4f}" if so_far.best_value is not None else ""
                progress.update(
                    task,
                    completed=sum(t.state != "running" for t in so_far.trials),
                    description=f"{best} · {so_far.count('pruned')} pruned"
                    + (f" · {so_far.count('fail')} failed" if so_far.count("fail") else ""),
                )

            result = run_recipe(config, on_trial=on_trial, say=console.print)
    if as_json:
        print(json.dumps(result.to_dict(), indent=2))
    elif not quiet:
        _show(result)
