"""The contract between ``fit`` and a private-training method such as DP-SGD.

``train`` sits below ``privacy`` in the layers, so ``fit`` cannot import
:class:`lepton.privacy.DPSGD` (nor Opacus). It takes any object with these methods
instead, duck-typed; :class:`lepton.privacy.DPSGD` is the one Lepton ships. ``fit`` calls
them in this order: :meth:`~TrainingPrivacy.prepare` before it builds the optimizer,
:meth:`~TrainingPrivacy.attach` after (this is where the budget is charged, before the
first step), the loop, then :meth:`~TrainingPrivacy.detach` (always, even on an error)
and :meth:`~TrainingPrivacy.report`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, NamedTuple, Protocol, runtime_checkable

import torch
from torch import nn

from lepton.data import Dataset

__all__ = ["Batches", "PrivateTraining", "TrainingPrivacy"]

#: A fresh iterator of ``(features, targets)`` batches for one epoch.
Batches = Callable[[], Iterable[tuple[torch.Tensor, torch.Tensor | None]]]


class PrivateTraining(NamedTuple):
    """What :meth:`TrainingPrivacy.attach` hands back to the loop."""

    model: nn.Module  # the model to call (e.g. wrapped to record per-sample gradients)
    optimizer: torch.optim.Optimizer  # the optimizer to step (clips and noises)
    batches: Batches  # one epoch's batches (e.g. Poisson-sampled)
    steps_per_epoch: int  # the expected number of batches per epoch


@runtime_checkable
class TrainingPrivacy(Protocol):
    """A private-training method ``fit(privacy=...)`` accepts."""

    def prepare(self, model: nn.Module) -> nn.Module:
        """Make ``model`` trainable this way (in place), or refuse it with a clear error."""
        ...

    def attach(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        train: Dataset,
        *,
        epochs: int,
        batch_size: int,
    ) -> PrivateTraining:
        """Wrap the model, optimizer and data for ``epochs``; pay for the whole run first."""
        ...

    def detach(self) -> None:
        """Undo what :meth:`attach` added to the model (hooks, per-sample buffers)."""
        ...

    def report(self) -> dict[str, Any]:
        """The guarantee reached and how, JSON-safe (``FitResult.privacy``)."""
        ...
