"""``lepton train`` and ``lepton demo``: real training from the command line."""

from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path
from typing import Any

import torch
import typer
from rich.console import Console
from rich.table import Table
from safetensors.torch import save_file
from torch import nn

from lepton import data as lp_data
from lepton import models as lp_models
from lepton._fs import atomic_dir
from lepton.data import Dataset
from lepton.errors import ConfigError, UnknownModelError
from lepton.registry import register as lp_register
from lepton.tracking import start_run
from lepton.train import FitResult, evaluate, fit
from lepton.train._progress import format_metrics

__all__ = ["build_for", "demo", "train"]

console = Console(highlight=False, soft_wrap=True)


def build_for(name: str, ds: Dataset, overrides: dict[str, Any]) -> nn.Module:
    """Build a zoo model whose input and output sizes fit ``ds`` (``overrides`` win)."""
    accepted = lp_models.model_parameters(name)
    shape = ds.input_shape
    auto: dict[str, Any] = {}
    if ds.task == "classification":
        auto["num_classes"] = ds.num_classes
    elif "out_features" in accepted:
        auto["out_features"] = (
            1 if ds.targets is None or ds.targets.dim() == 1 else ds.targets.shape[1]
        )
    if "in_features" in accepted:
        auto["in_features"] = math.prod(shape)
    if len(shape) == 3:
        auto["in_channels"] = shape[0]
        auto["input_size"] = [shape[1], shape[2]]
    config = {k: v for k, v in auto.items() if k in accepted}
    config.update(overrides)
    return lp_models.build(name, **config)


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
        pct = key in ("accuracy", "precision", "recall", "f1", "auc")
        table.add_row(key, f"{100 * value:.2f}%" if pct else f"{value:.4f}")
    return table


def _save(
    folder: Path, model: nn.Module, train_ds: Dataset, metrics: dict[str, float], result: FitResult
) -> Path:
    """Weights (safetensors) + a JSON manifest that rebuilds the model, written atomically."""
    manifest = {
        "model": lp_models.model_spec(model),
        "dataset": {
            "name": train_ds.name,
            "fingerprint": train_ds.fingerprint(),
            "preprocessing": list(train_ds.preprocessing),
        },
        "metrics": metrics,
        "fit": result.to_dict(),
    }
    if folder.exists():
        raise ConfigError(f"{folder} already exists; pass a new folder to --save")
    with atomic_dir(folder) as tmp:
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(tmp / "model.safetensors"))
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return folder


def _split_val(full: Dataset, val: str, data: str) -> tuple[Dataset, Dataset | None, Dataset]:
    if val not in ("holdout", "test", "none"):
        raise ConfigError(f"--val must be holdout, test or none, got {val!r}")
    test = lp_data.load(data, split="test")
    if val == "holdout":
        train_ds, val_ds = full.split(test_size=1 / 12, seed=0)
        return train_ds, val_ds, test
    return full, (test if val == "test" else None), test


def train(
    model: str = typer.Option(
        "convnet", "--model", "-m", help="Zoo model: mlp, convnet, resnet, lstm, gru, transformer."
    ),
    data: str = typer.Option("mnist", "--data", "-d", help="Catalog dataset (`lepton data list`)."),
    epochs: int = typer.Option(3, help="Passes over the training data."),
    batch_size: int = typer.Option(64, help="Samples per optimizer step."),
    optimizer: str = typer.Option("adamw", help="adamw, adam, sgd, adagrad or rmsprop."),
    lr: float = typer.Option(1e-3, help="Learning rate (peak rate with onecycle)."),
    weight_decay: float | None = typer.Option(None, help="Default: 0.01 for adamw, else 0."),
    schedule: str | None = typer.Option(None, help="cosine, onecycle, step or plateau."),
    early_stopping: int | None = typer.Option(None, help="Patience in epochs (val_loss)."),
    grad_clip: float | None = typer.Option(None, help="Clip the gradient norm to this."),
    seed: int = typer.Option(0, help="Seed for initial weights, shuffling, dropout, holdout."),
    device: str = typer.Option("auto", help="auto, cpu or cuda."),
    val: str = typer.Option("holdout", help="holdout (1/12 of train), test, or none."),
    config: list[str] = typer.Option([], "--config", "-c", help="Model argument key=value."),
    checkpoint_dir: Path | None = typer.Option(None, help="Checkpoint every epoch here."),
    resume: bool = typer.Option(False, help="Continue from the checkpoint in checkpoint-dir."),
    save: Path | None = typer.Option(None, help="Write weights + manifest to this new folder."),
    register: str | None = typer.Option(None, help="Register the result under this model name."),
    track: bool = typer.Option(True, help="Record the run (see `lepton runs list`)."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON only."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress output."),
) -> None:
    """Train a zoo model on a catalog dataset and report test metrics.

    Example: `lepton train --model convnet --data mnist --epochs 3`.
    Models: mlp, convnet, resnet, lstm, gru, transformer (`--config key=value` sets
    their arguments, e.g. `-c dropout=0.3 -c 'num_filters=[16,32]'`).
    """
    full = lp_data.load(data, split="train")
    train_ds, val_ds, test = _split_val(full, val, data)
    torch.manual_seed(seed)  # the seed covers the initial weights too
    net = build_for(model, train_ds, _parse_config(config))
    with contextlib.ExitStack() as stack:
        run = stack.enter_context(start_run(f"{model}-{data}")) if track else None
        result = fit(
            net,
            train_ds,
            val_ds,
            epochs=epochs,
            batch_size=batch_size,
            optimizer=optimizer,
            lr=lr,
            weight_decay=weight_decay,
            schedule=schedule,
            early_stopping=early_stopping,
            grad_clip=grad_clip,
            seed=seed,
            device=device,
            checkpoint_dir=checkpoint_dir,
            resume=resume,
            quiet=quiet or as_json,
        )
        metrics = evaluate(net, test)
        if run is not None:
            run.log_metrics({f"test_{k}": v for k, v in metrics.items()}, step=len(result.history))
        version = (
            lp_register(net, register, metrics=metrics, dataset=train_ds) if register else None
        )
    saved = _save(save, net, train_ds, metrics, result) if save is not None else None
    if as_json:
        print(
            json.dumps(
                {
                    "test": metrics,
                    "fit": result.to_dict(),
                    "run": run.id if run is not None else None,
                    "saved": str(saved) if saved else None,
                    "registered": version.ref if version is not None else None,
                },
                indent=2,
            )
        )
        return
    if not quiet:
        console.print(_metrics_table(f"test metrics ({data}, {len(test)} samples)", metrics))
        console.print(
            f"trained in {result.seconds:.1f}s ({result.samples_per_second:.0f} samples/s)"
        )
        if saved:
            console.print(f"saved to {saved}")
        if version is not None:
            console.print(f"registered as {version.ref} (lp.load_model({version.ref!r}))")


def demo(
    epochs: int = typer.Option(3, help="Training epochs (3 reach about 99% test accuracy)."),
    batch_size: int = typer.Option(64, help="Samples per optimizer step."),
    seed: int = typer.Option(0, help="Random seed."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only the final metrics."),
) -> None:
    """Train the seed ConvNet on real MNIST and report the test metrics."""
    console.print("[bold]Lepton demo[/]: ConvNet(num_filters=[32, 64, 128]) on MNIST (60k/10k)")
    full = lp_data.load("mnist", split="train")
    train_ds, val_ds = full.split(test_size=1 / 12, seed=seed)
    test = lp_data.load("mnist", split="test")
    torch.manual_seed(seed)
    model = lp_models.ConvNet(num_classes=10, num_filters=[32, 64, 128], kernel_size=3, dropout=0.5)
    with start_run("demo-mnist-convnet", tags={"demo": True}) as run:
        result = fit(
            model,
            train_ds,
            val_ds,
            epochs=epochs,
            batch_size=batch_size,
            optimizer="adamw",
            lr=2e-3,
            schedule="onecycle",
            seed=seed,
            quiet=quiet,
        )
        metrics = evaluate(model, test)
        run.log_metrics({f"test_{k}": v for k, v in metrics.items()}, step=epochs)
        version = lp_register(
            model,
            "mnist-convnet",
            metrics=metrics,
            dataset=train_ds,
            description="The seed ConvNet trained by `lepton demo`.",
        )
    console.print(_metrics_table("MNIST test set (10,000 images)", metrics))
    console.print(
        f"trained in {result.seconds:.1f}s; tracked as run {run.id} (`lepton runs show "
        f"{run.id}`); registered as {version.ref} (lp.load_model({version.ref!r}))"
    )
    console.print(f"final test: {format_metrics(metrics)}")
    console.print(
        f"serve it: `lepton deploy {version.ref} --port 8100`, then "
        f"`lepton predict http://127.0.0.1:8100 --input digit.png`"
    )
