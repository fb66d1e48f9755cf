"""``lepton data``: the built-in dataset catalog."""

from __future__ import annotations

import json
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from lepton import data as lp_data

__all__ = ["data_app"]

data_app = typer.Typer(help="Built-in datasets: list them, inspect one.", no_args_is_help=True)


def _row(info: lp_data.DatasetInfo) -> dict[str, Any]:
    location = info.locate()
    return {
        "name": info.name,
        "title": info.title,
        "task": info.task,
        "num_classes": info.num_classes,
        "input_shape": list(info.input_shape),
        "splits": dict(info.splits),
        "available": location is not None,
        "location": str(location) if location is not None else None,
        "source": info.source,
        "how_to_get": info.how_to_get,
    }


@data_app.command("list")
def list_(
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON."),
) -> None:
    """List the built-in datasets and whether their files are on this machine."""
    rows = [_row(info) for info in lp_data.list_datasets()]
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table(title="Lepton datasets")
    for column in ("name", "task", "classes", "shape", "splits", "available", "source"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            row["name"],
            row["task"],
            str(row["num_classes"] or "-"),
            "x".join(str(d) for d in row["input_shape"]),
            ", ".join(f"{k} {v:,}" for k, v in row["splits"].items()),
            "[green]yes[/]" if row["available"] else "[red]no[/]",
            row["source"],
        )
    Console().print(table)
    missing = [row for row in rows if not row["available"]]
    for row in missing:
        Console().print(f"[yellow]{row['name']}[/]: {row['how_to_get']}")


@data_app.command("show")
def show(
    name: str = typer.Argument(..., help="Dataset name, e.g. mnist or iris."),
    split: str = typer.Option("train", help="train, test or all."),
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON."),
) -> None:
    """Describe one dataset: sizes, classes, statistics and its content fingerprint."""
    info = lp_data.info(name)
    description = lp_data.load(name, split=split).describe()  # type: ignore[arg-type]
    if as_json:
        print(json.dumps({"info": _row(info), "describe": description}, indent=2, default=str))
        return
    console = Console()
    console.print(f"[bold]{info.title}[/] ({info.name}, split {split})")
    summary = Table(show_header=False, box=None)
    for key in ("rows", "input_shape", "dtype", "task", "num_classes", "missing", "fingerprint"):
        summary.add_row(f"[dim]{key}[/]", str(description[key]))
    summary.add_row("[dim]source[/]", info.source)
    summary.add_row("[dim]location[/]", str(info.locate() or f"not here: {info.how_to_get}"))
    console.print(summary)
    if "class_counts" in description:
        classes = Table("class", "samples", title="classes", title_justify="left")
        for cls, count in description["class_counts"].items():
            classes.add_row(cls, f"{count:,}")
        console.print(classes)
    stats = Table("feature", "mean", "std", "min", "max", title="features", title_justify="left")
    for feature, values in description["features"].items():
        stats.add_row(feature, *(f"{values[k]:.4g}" for k in ("mean", "std", "min", "max")))
    console.print(stats)
