"""Hooks into the training loop, and early stopping built on them."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from lepton._context import ActiveRun
from lepton.errors import TrainingError

__all__ = ["Callback", "EarlyStopping", "EpochRecord", "RunLogger", "TrainState"]


@dataclass
class EpochRecord:
    """What one epoch produced.

    Attributes:
        epoch: 1-based epoch number.
        train: Training metrics averaged over the epoch (``loss``, and ``accuracy`` for
            classifiers).
        val: Validation metrics (empty without validation data).
        lr: Learning rate at the end of the epoch.
        seconds: Wall time of the epoch, validation included.
    """

    epoch: int
    train: dict[str, float]
    val: dict[str, float]
    lr: float
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form."""
        return {
            "epoch": self.epoch,
            "train": self.train,
            "val": self.val,
            "lr": self.lr,
            "seconds": self.seconds,
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> EpochRecord:
        """Inverse of :meth:`to_dict`."""
        return cls(**raw)

    def get(self, key: str) -> float | None:
        """A metric by qualified name: ``"val_loss"``, ``"train_accuracy"``, ``"lr"``."""
        if key == "lr":
            return self.lr
        prefix, _, name = key.partition("_")
        source = {"val": self.val, "train": self.train}.get(prefix)
        return None if source is None else source.get(name)


@dataclass
class TrainState:
    """The live state of a ``fit`` call, handed to every callback.

    A callback may set ``should_stop = True`` to end training after the current epoch.
    """

    model: nn.Module
    optimizer: torch.optim.Optimizer
    epochs: int
    epoch: int = 0
    step: int = 0
    batch_loss: float = math.nan
    history: list[EpochRecord] = field(default_factory=list)
    should_stop: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


class Callback:
    """Base class for training hooks; override the ones you need.

    Example:
        >>> class PrintLR(Callback):
        ...     def on_epoch_end(self, state: TrainState) -> None:
        ...         print(state.history[-1].lr)
    """

    def on_fit_start(self, state: TrainState) -> None:
        """Called once before the first epoch (also when resuming)."""

    def on_epoch_start(self, state: TrainState) -> None:
        """Called before each epoch."""

    def on_batch_end(self, state: TrainState) -> None:
        """Called after each optimizer step. ``state.batch_loss`` is only filled every
        ``log_every`` steps (reading it every step would slow accelerators down)."""

    def on_epoch_end(self, state: TrainState) -> None:
        """Called after each epoch, once ``state.history`` has its record."""

    def on_fit_end(self, state: TrainState) -> None:
        """Called once after training ends (normally or by early stopping)."""

    def state_dict(self) -> dict[str, Any]:
        """JSON-safe state to put in checkpoints, so resuming continues exactly."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """Tensors to put in checkpoints beside :meth:`state_dict` (e.g. best weights)."""
        return {}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        """Restore what :meth:`state_tensors` returned."""


class EarlyStopping(Callback):
    """Stop when a monitored metric has not improved for ``patience`` epochs.

    Args:
        patience: Epochs without improvement to tolerate.
        monitor: Qualified metric name, e.g. ``"val_loss"`` or ``"val_accuracy"``.
        mode: ``"min"`` or ``"max"``; default: ``"max"`` for accuracy-like metrics.
        min_delta: Smallest change that counts as an improvement.
        restore_best: Load the best epoch's weights back into the model at the end.
    """

    def __init__(
        self,
        patience: int = 3,
        monitor: str = "val_loss",
        mode: Literal["min", "max"] | None = None,
        min_delta: float = 0.0,
        restore_best: bool = True,
    ) -> None:
        if patience < 1:
            raise TrainingError(f"patience must be >= 1, got {patience}; e.g. EarlyStopping(3)")
        self.patience = patience
        self.monitor = monitor
        higher = ("accuracy", "precision", "recall", "f1", "auc", "r2")
        self.mode = mode or ("max" if monitor.endswith(higher) else "min")
        self.min_delta = min_delta
        self.restore_best = restore_best
        self.best: float | None = None
        self.best_epoch = 0
        self.wait = 0
        self._best_weights: dict[str, torch.Tensor] | None = None

    def _improved(self, value: float) -> bool:
        if self.best is None:
            return True
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def on_epoch_end(self, state: TrainState) -> None:
        value = state.history[-1].get(self.monitor)
        if value is None:
            raise TrainingError(
                f"early stopping monitors {self.monitor!r}, which this run does not produce; "
                f"pass val= data for val_* metrics, or monitor='train_loss'"
            )
        if self._improved(value):
            self.best, self.best_epoch, self.wait = value, state.epoch, 0
            if self.restore_best:
                self._best_weights = {
                    k: v.detach().clone() for k, v in state.model.state_dict().items()
                }
        else:
            self.wait += 1
            if self.wait >= self.patience:
                state.should_stop = True

    def on_fit_end(self, state: TrainState) -> None:
        if self.restore_best and self._best_weights is not None:
            state.model.load_state_dict(self._best_weights)

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch, "wait": self.wait}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best = state["best"]
        self.best_epoch = state["best_epoch"]
        self.wait = state["wait"]

    def state_tensors(self) -> dict[str, torch.Tensor]:
        return dict(self._best_weights or {})

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        self._best_weights = dict(tensors) or None


class RunLogger(Callback):
    """Log a ``fit`` call into a tracking run: its settings, data lineage, and per-epoch
    ``train_*`` / ``val_*`` metrics and learning rate (step = epoch).

    ``fit`` adds one by itself when a run is active (``with lp.start_run(...)``).
    """

    def __init__(self, run: ActiveRun, settings: dict[str, Any], datasets: dict[str, Any]) -> None:
        self.run = run
        self.settings = settings
        self.datasets = datasets

    def on_fit_start(self, state: TrainState) -> None:
        from lepton.errors import UnknownModelError
        from lepton.models import model_spec

        params: dict[str, Any] = {"fit": self.settings}
        try:
            params["model_spec"] = model_spec(state.model)
        except UnknownModelError:
            params["model_spec"] = {"name": type(state.model).__name__}
        self.run.log_params(params)
        for role, dataset in self.datasets.items():
            self.run.log_dataset(dataset, role=role)

    def on_epoch_end(self, state: TrainState) -> None:
        record = state.history[-1]
        values = {f"train_{k}": v for k, v in record.train.items()}
        values.update({f"val_{k}": v for k, v in record.val.items()})
        values["lr"] = record.lr
        values["epoch_seconds"] = record.seconds
        self.run.log_metrics(values, step=record.epoch)
