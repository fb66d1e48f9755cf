"""``lepton runs``: list, inspect and compare tracked runs."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from lepton.tracking import compare_runs, get_run, list_runs, metric_history, plot_curves

__all__ = ["runs_app"]

runs_app = typer.Typer(help="Tracked runs: list, show and compare them.", no_args_is_help=True)
_STATE_STYLE = {"running": "cyan", "finished": "green", "failed": "red", "killed": "yellow"}


def _when(ts: float | None) -> str:
    return dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S") if ts else "-"


@runs_app.command("list")
def list_(
    state: str | None = typer.Option(None, help="Only runs in this state."),
    limit: int = typer.Option(20, help="How many runs, newest first."),
    offset: int = typer.Option(0, help="Skip this many (for paging)."),
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON."),
) -> None:
    """List runs, newest first, with their last metric values."""
    records = list_runs(state=state, limit=limit, offset=offset)
    if as_json:
        print(json.dumps([r.to_dict() for r in records], indent=2))
        return
    table = Table(title="runs")
    for column in ("id", "name", "state", "started", "metrics"):
        table.add_column(column)
    for r in records:
        shown = {k: v for k, v in r.metrics.items() if k.startswith(("val_", "train_loss"))}
        metrics = "  ".join(f"{k} {v:.4g}" for k, v in list(shown.items())[:4])
        color = _STATE_STYLE.get(r.state, "white")
        table.add_row(str(r.id), r.name, f"[{color}]{r.state}[/]", _when(r.created_at), metrics)
    Console().print(table)


@runs_app.command()
def show(
    run_id: int = typer.Argument(..., help="Run id (see `lepton runs list`)."),
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON."),
) -> None:
    """Show one run: params, tags, system, and the last value of each metric."""
    record = get_run(run_id)
    if as_json:
        print(json.dumps(record.to_dict(), indent=2))
        return
    console = Console()
    color = _STATE_STYLE.get(record.state, "white")
    console.print(f"[bold]run {record.id}[/] {record.name}  [{color}]{record.state}[/]  "
                  f"{_when(record.created_at)} -> {_when(record.ended_at)}")  # fmt: skip
    for title, values in (("params", record.params), ("metrics", record.metrics),
                          ("tags", record.tags), ("system", record.system)):  # fmt: skip
        table = Table("key", "value", title=title, title_justify="left")
        for key, value in values.items():
            table.add_row(key, f"{value:.6g}" if isinstance(value, float) else json.dumps(value))
        console.print(table)


@runs_app.command()
def compare(
    run_ids: list[int] = typer.Argument(..., help="Two or more run ids."),
    plot: Path | None = typer.Option(None, help="Also draw --metric of each run (.svg or .png)."),
    metric: str = typer.Option("val_loss", help="The metric to plot."),
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON."),
) -> None:
    """Compare runs: the params that differ and every metric, side by side."""
    table_data = compare_runs(run_ids)
    if plot is not None:
        series = [
            (f"{r['id']} {r['name']}", metric_history(r["id"], metric)) for r in table_data["runs"]
        ]
        plot_curves(series, plot, title=metric, y_label=metric)
    if as_json:
        print(json.dumps(table_data, indent=2))
        return
    table = Table("", *(f"{r['id']} {r['name']}" for r in table_data["runs"]))
    for section in ("params", "metrics"):
        table.add_row(f"[bold]{section}[/]")
        for key, values in table_data[section].items():
            table.add_row(key, *(f"{v:.4g}" if isinstance(v, float) else str(v) for v in values))
    Console().print(table)
    if plot is not None:
        Console().print(f"plot written to {plot}")
