"""``lepton data``: the built-in dataset catalog, and registered (versioned) datasets:
``register`` a file as a version, list a name's ``versions``, ``diff`` two."""

from __future__ import annotations

import json
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from lepton import data as lp_data

__all__ = ["data_app"]

data_app = typer.Typer(
    help="Datasets: the built-in catalog, and versioned datasets of your own.",
    no_args_is_help=True,
)


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


@data_app.command("register")
def register(
    path: str = typer.Argument(..., help="A CSV, TSV, Parquet, NPZ or IDX file, or a folder."),
    name: str = typer.Option(..., "--name", help="The dataset's name, e.g. churn."),
    target: str | None = typer.Option(None, help="Target column of a table (default: the last)."),
    derived_from: str | None = typer.Option(
        None, "--derived-from", help="The version it was made from, e.g. churn@1."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON."),
) -> None:
    """Register a file as a version of NAME (the same content is the same version).

    A table is checked row by row first: every bad row is listed with its line number and
    nothing is stored unless the whole file is good."""
    from lepton.data._validate import TABLE_SUFFIXES, read_checked_table

    if path.lower().endswith(TABLE_SUFFIXES):
        dataset = read_checked_table(path, target=target if target else -1, name=name)
    else:
        dataset = lp_data.load_path(path, name=name)
    known = {v.fingerprint for v in _versions_or_none(name)}
    version = lp_data.register(dataset, name, derived_from=derived_from)
    if as_json:
        print(json.dumps(version.to_dict(), indent=2, default=str))
        return
    verb = "already registered as" if version.fingerprint in known else "registered"
    Console().print(
        f"{verb} [bold]{version.ref}[/]: {version.rows:,} rows, {version.format}, "
        f"{version.size:,} bytes, {version.fingerprint[:19]}..."
    )


def _versions_or_none(name: str) -> list[lp_data.DatasetVersion]:
    from lepton.errors import DatasetNotFoundError

    try:
        return lp_data.versions(name)
    except DatasetNotFoundError:
        return []


@data_app.command("versions")
def versions(
    name: str = typer.Argument(..., help="A registered dataset's name."),
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON."),
) -> None:
    """List the versions of a registered dataset, with their lineage."""
    found = lp_data.versions(name)
    if as_json:
        print(json.dumps([v.to_dict() for v in found], indent=2, default=str))
        return
    table = Table(title=f"{name}: {len(found)} versions")
    for column in ("version", "rows", "format", "fingerprint", "derived from", "used by"):
        table.add_column(column)
    for v in found:
        used = ", ".join(
            f"run {u['run_id']}" if u.get("run_id") is not None else str(u.get("model"))
            for u in v.used_by
        )
        table.add_row(
            v.ref, f"{v.rows:,}", v.format, v.fingerprint[:19] + "...", v.derived_from or "-",
            used or "-",
        )  # fmt: skip
    Console().print(table)


@data_app.command("diff")
def diff(
    a: str = typer.Argument(..., help="The first version, e.g. churn@1."),
    b: str = typer.Argument(..., help="The second version, e.g. churn@2."),
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON."),
) -> None:
    """Rows added and removed, schema changes and distribution changes from A to B."""
    found = lp_data.diff(a, b)
    if as_json:
        print(json.dumps(found.to_dict(), indent=2, default=str))
        return
    print(found)
