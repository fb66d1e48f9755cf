"""``lepton train`` and ``lepton demo``: real training from the command line."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from lepton.errors import UnknownModelError
from lepton.registry import register as lp_register
from lepton.registry._registry import validate_name
from lepton.train._progress import format_metrics
from lepton.train.recipe import TrainConfig, TrainOutcome
from lepton.train.recipe import run as run_recipe

__all__ = ["demo", "train", "train_and_report", "training_config"]

console = Console(highlight=False, soft_wrap=True)
DEFAULT = TrainConfig.model_construct()  # every default once, in the recipe


def _parse_config(items: list[str]) -> dict[str, Any]:
    config: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise UnknownModelError(
                f"--config takes key=value pairs, got {item!r}; e.g. --config dropout=0.3 "
                f"--config 'num_filters=[16, 32]'"
            )
        try:
            config[key] = json.loads(raw)
        except json.JSONDecodeError:
            config[key] = raw
    return config


def _metrics_table(title: str, metrics: dict[str, float]) -> Table:
    table = Table(title=title, title_justify="left", min_width=len(title))
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in metrics.items():
        pct = key in ("precision", "recall", "f1", "auc") or key.endswith("accuracy")
        table.add_row(key, f"{100 * value:.2f}%" if pct else f"{value:.4f}")
    return table


def train(
    model: str = typer.Option(
        DEFAULT.model,
        "--model",
        "-m",
        help="Zoo model: mlp, convnet, resnet, lstm, gru, transformer.",
    ),
    data: str = typer.Option(
        DEFAULT.data, "--data", "-d", help="Catalog dataset (`lepton data list`)."
    ),
    epochs: int = typer.Option(DEFAULT.epochs, help="Passes over the training data."),
    batch_size: int = typer.Option(DEFAULT.batch_size, help="Samples per optimizer step."),
    optimizer: str = typer.Option(DEFAULT.optimizer, help="adamw, adam, sgd, adagrad or rmsprop."),
    lr: float = typer.Option(DEFAULT.lr, help="Learning rate (peak rate with onecycle)."),
    weight_decay: float | None = typer.Option(
        DEFAULT.weight_decay, help="Default: 0.01 for adamw, else 0."
    ),
    schedule: str | None = typer.Option(
        DEFAULT.schedule, help="cosine, onecycle, step or plateau."
    ),
    early_stopping: int | None = typer.Option(
        DEFAULT.early_stopping, help="Patience in epochs (val_loss)."
    ),
    grad_clip: float | None = typer.Option(
        DEFAULT.grad_clip, help="Clip the gradient norm to this."
    ),
    seed: int = typer.Option(
        DEFAULT.seed, help="Seed for initial weights, shuffling, dropout (not the holdout)."
    ),
    device: str = typer.Option(DEFAULT.device, help="auto, cpu or cuda."),
    val: str = typer.Option(DEFAULT.val, help="holdout (1/12 of train), test, or none."),
    limit: int | None = typer.Option(DEFAULT.limit, help="Train on the first N samples only."),
    config: list[str] = typer.Option([], "--config", "-c", help="Model argument key=value."),
    checkpoint_dir: Path | None = typer.Option(None, help="Checkpoint every epoch here."),
    resume: bool = typer.Option(False, help="Continue from the checkpoint in checkpoint-dir."),
    save: Path | None = typer.Option(None, help="Write weights + manifest to this new folder."),
    register: str | None = typer.Option(
        DEFAULT.register_as, help="Register the result under this model name."
    ),
    workers: int = typer.Option(
        DEFAULT.workers, min=1, help="Data-parallel processes (global batch = batch-size)."
    ),
    track: bool = typer.Option(True, help="Record the run (see `lepton runs list`)."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON only."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress output."),
) -> None:
    """Train a zoo model on a catalog dataset and report test metrics.

    Example: `lepton train --model convnet --data mnist --epochs 3`.
    Models: mlp, convnet, resnet, lstm, gru, transformer (`--config key=value` sets
    their arguments, e.g. `-c dropout=0.3 -c 'num_filters=[16,32]'`).
    """
    train_and_report(dict(locals()))


def train_and_report(
    values: dict[str, Any],
    *,
    config_cls: type[TrainConfig] = TrainConfig,
    runner: Callable[..., TrainOutcome] = run_recipe,
    extra: dict[str, Any] | None = None,
) -> None:
    """What ``lepton train`` does with its options (``values``, by parameter name):
    ``lepton vision train`` passes the same options plus ``extra`` fields of its own
    ``config_cls``, run by its own ``runner``."""
    if values["register"] is not None:
        validate_name(values["register"])  # before the training, not after it
    recipe = training_config(values, config_cls=config_cls, extra=extra)
    quiet, as_json = values["quiet"], values["as_json"]
    outcome = runner(
        recipe,
        registrar=lp_register,
        save_to=values["save"],
        checkpoint_dir=values["checkpoint_dir"],
        resume=values["resume"],
        track=values["track"],
        quiet=quiet or as_json,
    )
    if as_json:
        print(json.dumps(_summary(outcome), indent=2))
        return
    if not quiet:
        test = f"test metrics ({recipe.data}, {len(outcome.test_data)} samples)"
        console.print(_metrics_table(test, outcome.metrics))
        console.print(
            f"trained in {outcome.fit.seconds:.1f}s "
            f"({outcome.fit.samples_per_second:.0f} samples/s)"
        )
        if outcome.saved:
            console.print(f"saved to {outcome.saved}")
        if outcome.registered is not None:
            ref = outcome.registered
            console.print(f"registered as {ref} (lp.load_model({ref!r}))")


_RECIPE_FIELDS = ("model", "data", "limit", "val", "epochs", "batch_size", "optimizer", "lr",
                  "weight_decay", "schedule", "early_stopping", "grad_clip", "seed", "device",
                  "register", "workers")  # fmt: skip


def training_config(
    values: dict[str, Any],
    *,
    config_cls: type[TrainConfig] = TrainConfig,
    extra: dict[str, Any] | None = None,
) -> TrainConfig:
    """The checked recipe config of ``lepton train``'s option ``values`` plus ``extra``."""
    fields = {name: values[name] for name in _RECIPE_FIELDS}
    return config_cls.checked(config=_parse_config(values["config"]), **fields, **(extra or {}))


def _summary(outcome: TrainOutcome) -> dict[str, Any]:
    return {
        "test": outcome.metrics,
        "fit": outcome.fit.to_dict(),
        "run": outcome.run_id,
        "saved": str(outcome.saved) if outcome.saved else None,
        "registered": outcome.registered,
    }


def demo(
    epochs: int = typer.Option(3, help="Training epochs (3 reach about 99% test accuracy)."),
    batch_size: int = typer.Option(DEFAULT.batch_size, help="Samples per optimizer step."),
    seed: int = typer.Option(DEFAULT.seed, help="Random seed."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only the final metrics."),
) -> None:
    """Train the seed ConvNet on real MNIST and report the test metrics."""
    console.print("[bold]Lepton demo[/]: ConvNet(num_filters=[32, 64, 128]) on MNIST (60k/10k)")
    recipe = TrainConfig.checked(
        model="convnet", config={"num_filters": [32, 64, 128], "kernel_size": 3, "dropout": 0.5},
        data="mnist", epochs=epochs, batch_size=batch_size, optimizer="adamw", lr=2e-3,
        schedule="onecycle", seed=seed, register="mnist-convnet",
    )  # fmt: skip
    outcome = run_recipe(
        recipe,
        registrar=functools.partial(
            lp_register, description="The seed ConvNet trained by `lepton demo`."
        ),
        run_name="demo-mnist-convnet",
        tags={"demo": True},
        quiet=quiet,
    )
    ref = outcome.registered
    console.print(_metrics_table("MNIST test set (10,000 images)", outcome.metrics))
    console.print(
        f"trained in {outcome.fit.seconds:.1f}s; tracked as run {outcome.run_id} (`lepton runs "
        f"show {outcome.run_id}`); registered as {ref} (lp.load_model({ref!r}))"
    )
    console.print(f"final test: {format_metrics(outcome.metrics)}")
    console.print(
        f"serve it: `lepton deploy {ref} --port 8100`, then "
        f"`lepton predict http://127.0.0.1:8100 --input digit.png`"
    )
