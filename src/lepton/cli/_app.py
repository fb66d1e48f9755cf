"""The root ``lepton`` command: global options, error handling, sub-commands."""

from __future__ import annotations

import sys

import typer
from rich.console import Console

from lepton._version import __version__
from lepton.cli._automl import automl
from lepton.cli._compress import compress
from lepton.cli._data import data_app
from lepton.cli._db import db_app
from lepton.cli._env import env
from lepton.cli._federated import federated
from lepton.cli._graph import graph_app
from lepton.cli._jobs import jobs_app
from lepton.cli._launch import launch
from lepton.cli._models import models_app
from lepton.cli._privacy import privacy_app
from lepton.cli._recommend import recommend_app
from lepton.cli._runs import runs_app
from lepton.cli._serve import deploy, predict, serve
from lepton.cli._server import server, users_app
from lepton.cli._text import text_app
from lepton.cli._train import demo, train
from lepton.cli._tune import tune
from lepton.cli._vision import vision_app
from lepton.errors import LeptonError

__all__ = ["app", "main"]

app = typer.Typer(
    name="lepton",
    help=(
        "Lepton: train, track, register and serve models from one tool.\n\n"
        "Start with `lepton server --demo` (the platform: trains, registers and deploys a "
        "ConvNet on real MNIST, with a dashboard), `lepton demo` (the same training, in this "
        "terminal), `lepton data list` (built-in datasets) or `lepton train --help`."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode="markdown",
)
app.add_typer(data_app, name="data")
app.add_typer(db_app, name="db")
app.add_typer(runs_app, name="runs")
app.add_typer(models_app, name="models")
app.add_typer(users_app, name="users")
app.add_typer(jobs_app, name="jobs")
app.add_typer(privacy_app, name="privacy")
app.add_typer(recommend_app, name="recommend")
app.add_typer(graph_app, name="graph")
app.add_typer(text_app, name="text")
app.add_typer(vision_app, name="vision")
app.command()(server)
app.command()(train)
app.command()(tune)
app.command()(automl)
app.command()(compress)
app.command()(federated)
app.command()(demo)
app.command()(env)
app.command()(serve)
app.command()(deploy)
app.command()(predict)
app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True,
                      "allow_interspersed_args": False},
)(launch)  # fmt: skip


def _version(value: bool) -> None:
    if value:
        print(f"lepton {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Lepton's command line."""


def main() -> None:
    """Entry point of the ``lepton`` script: Lepton errors become one clear line, exit 2."""
    try:
        app()
    except LeptonError as exc:
        Console(file=sys.stderr, highlight=False).print(
            f"[bold red]error[/] [dim]({exc.code})[/]: {exc.message}"
        )
        sys.exit(2)
    except KeyboardInterrupt:
        Console(file=sys.stderr).print("[yellow]interrupted[/]")
        sys.exit(130)
