"""``lepton models``: the model registry from the command line."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import typer
from rich.console import Console
from rich.markdown import Markdown
from rich.table import Table

from lepton import registry

__all__ = ["models_app"]

models_app = typer.Typer(help="Registered models: list, show, promote, alias, delete.",
                         no_args_is_help=True)  # fmt: skip


@models_app.command("list")
def list_(
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON."),
) -> None:
    """List registered models with their number of ready versions."""
    rows = registry.list_models()
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table("name", "versions", "latest", "description", title="models")
    for row in rows:
        table.add_row(
            str(row["name"]), str(row["versions"]), str(row["latest"]), str(row["description"])
        )
    Console().print(table)


@models_app.command()
def show(
    ref: str = typer.Argument(..., help="'name' (all versions), 'name:3' or 'name@production'."),
    card: bool = typer.Option(False, help="Print the model card."),
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON."),
) -> None:
    """Show a model's versions, or one version (with --card, its model card)."""
    if ":" not in ref and "@" not in ref:
        versions = registry.list_versions(ref)
    else:
        versions = [registry.resolve(ref)]
    if as_json:
        print(json.dumps([v.to_dict() for v in versions], indent=2))
        return
    console = Console()
    if card:
        console.print(Markdown(registry.model_card_text(versions[0].ref)))
        return
    table = Table("version", "stage", "aliases", "metrics", "dataset", "registered", title=ref)
    for v in versions:
        metrics = "  ".join(f"{k} {val:.4g}" for k, val in list(v.metrics.items())[:3])
        data = v.manifest.get("dataset") or {}
        when = dt.datetime.fromtimestamp(v.created_at).strftime("%Y-%m-%d %H:%M")
        table.add_row(str(v.version), v.stage or "-", ", ".join(v.aliases) or "-", metrics,
                      str(data.get("name", "-")), when)  # fmt: skip
    console.print(table)


@models_app.command()
def promote(
    ref: str = typer.Argument(..., help="'name:VERSION'."),
    stage: str = typer.Argument(..., help=f"One of: {', '.join(registry.STAGES)}."),
) -> None:
    """Move a version to a stage (then load it as name@stage)."""
    version = registry.set_stage(ref, stage)
    Console().print(f"{version.ref} is now in {stage} (load it as {version.name}@{stage})")


@models_app.command()
def alias(
    ref: str = typer.Argument(..., help="'name:VERSION'."),
    name: str = typer.Argument(..., help="The alias, e.g. champion."),
) -> None:
    """Point name@ALIAS at a version."""
    version = registry.set_alias(ref, name)
    Console().print(f"{version.name}@{name} -> {version.ref}")


@models_app.command()
def delete(
    ref: str = typer.Argument(..., help="'name:VERSION'."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
) -> None:
    """Delete one version: its record, aliases and files."""
    if not yes:
        typer.confirm(f"delete {ref}?", abort=True)
    version = registry.delete_version(ref)
    Console().print(f"deleted {version.ref}")


@models_app.command()
def export(
    ref: str = typer.Argument(..., help="'name:VERSION' or 'name@stage'."),
    output: Path = typer.Option(..., "--output", "-o", help="The .onnx file to write."),
) -> None:
    """Export a version to ONNX (checked against PyTorch with onnxruntime)."""
    report = registry.export_onnx(ref, output)
    Console().print(f"wrote {report['path']} ({report['bytes']:,} bytes); onnxruntime vs PyTorch "
                    f"max |diff| {report['max_abs_diff']:.2e}")  # fmt: skip


@models_app.command("import-onnx")
def import_onnx(
    path: Path = typer.Argument(..., help="An .onnx file from any framework."),
    name: str = typer.Argument(..., help="The model name to register it under."),
    classes: str = typer.Option(
        "", help="A classifier's class names in output order, comma-separated (e.g. 0,1,2)."
    ),
) -> None:
    """Register an ONNX file as a new version (pickle files are refused)."""
    names = [c.strip() for c in classes.split(",") if c.strip()] or None
    version = registry.register_onnx(path, name, classes=names)
    Console().print(f"registered {version.ref} (input {version.manifest['input_schema']})")
