"""The root ``lepton`` command: global options, error handling, sub-commands."""

from __future__ import annotations

import importlib
import sys
from typing import Any, Literal

import typer
from rich.console import Console
from typer import _click as click  # typer 0.29 vendors its own click
from typer.core import TyperCommand, TyperGroup

from lepton._version import __version__
from lepton.errors import LeptonError

__all__ = ["COMMANDS", "app", "load_command", "main"]

# Every sub-command: name -> (its module in lepton.cli, the attribute there, the first
# paragraph of its help). `lepton --help` lists them from here, and a command's module is
# imported only when that command runs: most of them import torch at the top (their option
# defaults come from the recipes' configs), and `lepton --help`, `--version`, `server`,
# `users`, `serve` or `predict` do not need it. tests/unit/test_cli_startup.py checks that
# each help here is the command's own.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "server": ("_server", "server", "Run the Lepton platform: REST API (/api/v1, docs at /docs), "
               "jobs, deployments, dashboard."),
    "train": ("_train", "train", "Train a zoo model on a catalog dataset and report test metrics."),
    "tune": ("_tune", "tune", "Search hyper-parameters of a zoo model with Optuna (TPE and "
             "pruning by default)."),
    "automl": ("_automl", "automl", "Search preprocessing, features and model families for a "
               "table, within a budget."),
    "compress": ("_compress", "compress", "Make a registered model smaller and faster, and "
                 "register the result."),
    "federated": ("_federated", "federated", "Federated learning on Flower: clients keep their "
                  "data, only model updates travel."),
    "demo": ("_train", "demo", "Train the seed ConvNet on real MNIST and report the test metrics."),
    "env": ("_env", "env", "Show versions, devices and paths (paste this into bug reports)."),
    "serve": ("_serve", "serve", "Serve an lp.Service class over HTTP (OpenAPI at /openapi.json, "
              "metrics at /metrics)."),
    "deploy": ("_serve", "deploy", "Serve a registered model (PyTorch or ONNX) with a batched "
               "POST /predict."),
    "predict": ("_serve", "predict", "Predict one input, with a running deployment (URL) or a "
                "registered model locally."),
    "launch": ("_launch", "launch", "Run SCRIPT on `--nproc-per-node` processes on each of "
               "`--nnodes` machines."),
    "data": ("_data", "data_app", "Datasets: the built-in catalog, and versioned datasets of "
             "your own."),
    "db": ("_db", "db_app", "The metadata database: check and migrate its schema."),
    "deployments": ("_deployments", "deployments_app", "The platform's deployments: list them, "
                    "stop them, autoscale them (also when no server runs), release a new "
                    "version (at once or as a canary)."),
    "runs": ("_runs", "runs_app", "Tracked runs: list, show and compare them."),
    "models": ("_models", "models_app", "Registered models: list, show, promote, alias, delete."),
    "users": ("_server", "users_app", "Platform users and API tokens, managed on the server's "
              "own database."),
    "jobs": ("_jobs", "jobs_app", "Jobs on the platform server (LEPTON_SERVER_URL, default "
             "http://127.0.0.1:8000; token from LEPTON_TOKEN or LEPTON_HOME/admin-token)."),
    "privacy": ("_privacy", "privacy_app", "Differential privacy: each dataset's (epsilon, "
                "delta) budget, the ledger of what was released, and DP queries charged to it "
                "before they answer."),
    "recommend": ("_recommend", "recommend_app", "Recommenders (lp.recommend) on "
                  "MovieLens-small: train one (locally or as a platform job), then ask a "
                  "registered version, or a deployment of it, for a user's recommendations or "
                  "an item's similar items."),
    "graph": ("_graph", "graph_app", "Knowledge graphs (lp.graph): train a link-prediction "
              "embedding (locally or as a platform job), predict links and similar entities "
              "with a registered version or a deployment of it, and run read-only SPARQL."),
    "text": ("_text", "text_app", "Language (lp.text): train a text classifier, build a "
             "semantic-search index or an FAQ assistant (locally or as a platform job), and ask "
             "a registered version or a deployment of it."),
    "vision": ("_vision", "vision_app", "Computer vision (lp.vision): image classification "
               "with augmentation, object detection on digit scenes or COCO boxes, "
               "class-conditional image generation."),
    "alerts": ("_alerts", "alerts_app", "Alert rules and alerts on the platform server "
               "(LEPTON_SERVER_URL, default http://127.0.0.1:8000; token from LEPTON_TOKEN or "
               "LEPTON_HOME/admin-token)."),
}  # fmt: skip
# `lepton launch SCRIPT --its-own-flags`: everything after SCRIPT is the script's.
_CONTEXT: dict[str, dict[str, Any]] = {
    "launch": {"allow_extra_args": True, "ignore_unknown_options": True,
               "allow_interspersed_args": False},
}  # fmt: skip
_MARKUP: Literal["markdown"] = "markdown"


def load_command(name: str) -> click.Command:
    """The click command ``lepton NAME`` runs, built as if it had been registered up front
    (same markup, same context settings): its module is imported here."""
    module, attribute, _ = COMMANDS[name]
    target = getattr(importlib.import_module(f"lepton.cli.{module}"), attribute)
    holder = typer.Typer(rich_markup_mode=_MARKUP, add_completion=False)
    if isinstance(target, typer.Typer):
        holder.add_typer(target, name=name)
    else:
        holder.command(name=name, context_settings=_CONTEXT.get(name))(target)
    return typer.main.get_group(holder).commands[name]


class _Listed(TyperCommand):
    """A command listed by name and help only, until it runs."""


class _LazyGroup(TyperGroup):
    """The root group: lists :data:`COMMANDS` and imports only the one that runs."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for name, (_, _, help_text) in COMMANDS.items():
            self.commands.setdefault(name, _Listed(name, help=help_text))

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        name, command, rest = super().resolve_command(ctx, args)
        if name is not None and isinstance(command, _Listed):
            command = self.commands[name] = load_command(name)
        return name, command, rest


app = typer.Typer(
    name="lepton",
    help=(
        "Lepton: train, track, register and serve models from one tool.\n\n"
        "Start with `lepton server --demo` (the platform: trains, registers and deploys a "
        "ConvNet on real MNIST, with a dashboard), `lepton demo` (the same training, in this "
        "terminal), `lepton data list` (built-in datasets) or `lepton train --help`."
    ),
    cls=_LazyGroup,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=_MARKUP,
)


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
