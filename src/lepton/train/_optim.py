"""Optimizers and learning-rate schedules, chosen by name."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch.optim.lr_scheduler import LRScheduler, ReduceLROnPlateau

from lepton.errors import TrainingError

__all__ = ["OPTIMIZERS", "SCHEDULES", "make_optimizer", "make_scheduler"]

OPTIMIZERS = ("adamw", "adam", "sgd", "adagrad", "rmsprop")
# Schedules stepped after every batch, except "step" and "plateau" (after every epoch).
SCHEDULES = ("cosine", "onecycle", "step", "plateau")

Scheduler = LRScheduler | ReduceLROnPlateau


def make_optimizer(
    name: str,
    params: Iterable[torch.nn.Parameter],
    *,
    lr: float,
    weight_decay: float | None,
    momentum: float,
) -> torch.optim.Optimizer:
    """Build an optimizer by name.

    ``weight_decay=None`` means each optimizer's usual default: 0.01 for AdamW (decoupled
    decay), 0 for the others (where it acts as an L2 penalty).
    """
    key = name.lower()
    decay = (0.01 if key == "adamw" else 0.0) if weight_decay is None else weight_decay
    if key == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=decay)
    if key == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=decay)
    if key == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=decay)
    if key == "adagrad":
        return torch.optim.Adagrad(params, lr=lr, weight_decay=decay)
    if key == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, momentum=momentum, weight_decay=decay)
    raise TrainingError(
        f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)} "
        f"(e.g. lp.fit(..., optimizer='adamw'))"
    )


def make_scheduler(
    name: str | None,
    optimizer: torch.optim.Optimizer,
    *,
    epochs: int,
    steps_per_epoch: int,
    lr: float,
) -> Scheduler | None:
    """Build a learning-rate schedule by name (``None`` keeps the rate constant)."""
    if name is None:
        return None
    key = name.lower()
    total = max(1, epochs * steps_per_epoch)
    if key == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
    if key == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=total)
    if key == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=max(1, epochs // 3), gamma=0.1)
    if key == "plateau":
        return ReduceLROnPlateau(optimizer, factor=0.5, patience=1)
    raise TrainingError(
        f"unknown schedule {name!r}; choose one of {', '.join(SCHEDULES)} or None "
        f"(e.g. lp.fit(..., schedule='cosine'))"
    )


def steps_per_batch(name: str | None) -> bool:
    """Whether the named schedule advances after every batch (else after every epoch)."""
    return name is not None and name.lower() in ("cosine", "onecycle")


def scheduler_state(scheduler: Scheduler | None) -> dict[str, Any] | None:
    """The schedule's JSON-safe state (``None`` without a schedule)."""
    if scheduler is None:
        return None
    return {k: v for k, v in scheduler.state_dict().items() if not callable(v)}
