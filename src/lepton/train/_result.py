"""What ``fit`` returns, and the type of its ``loss=`` hook."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from lepton.train._callbacks import EpochRecord

__all__ = ["BatchTransform", "FitResult", "LossHook"]

#: ``loss(outputs, targets, inputs) -> scalar tensor``: replaces the default loss of
#: :func:`fit` (e.g. knowledge distillation, which also needs the inputs).
LossHook = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]

#: ``batch_transform(inputs, targets) -> (inputs, targets)``: applied to every training
#: batch of :func:`fit` before the forward pass (e.g. mixup/cutmix).
BatchTransform = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


@dataclass
class FitResult:
    """What :func:`fit` returns.

    Attributes:
        history: One record per epoch (train and validation metrics, learning rate, time).
        metrics: Metrics of the weights the model holds now (validation metrics when
            ``val`` was given, else training metrics): pass these to the registry.
        best_epoch: The epoch with the best monitored value.
        monitor: The monitored metric, e.g. ``"val_loss"``.
        seconds: Wall time of the whole call.
        samples_per_second: Training throughput (validation excluded).
        stopped_early: Whether early stopping ended the run.
        checkpoint: The last checkpoint folder, when ``checkpoint_dir`` was set.
        privacy: For a differentially private run (``fit(privacy=...)``), its guarantee
            and how it was reached: ``epsilon`` (spent by the steps taken), ``delta``,
            ``accountant``, ``max_grad_norm``, ``noise_multiplier``, ``sample_rate``,
            ``steps`` and more (see :class:`lepton.privacy.DPSGD`); pass it to
            ``lp.register(..., privacy=result.privacy)`` so the model card states it.
            ``None`` for an ordinary run.
    """

    history: list[EpochRecord]
    metrics: dict[str, float]
    best_epoch: int
    monitor: str
    seconds: float
    samples_per_second: float
    stopped_early: bool = False
    checkpoint: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    privacy: dict[str, Any] | None = None

    @property
    def best(self) -> dict[str, float]:
        """Metrics of the best epoch by ``monitor`` (validation metrics when available)."""
        record = self.history[self.best_epoch - 1] if self.best_epoch else self.history[-1]
        return dict(record.val or record.train)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form."""
        return {
            "best": self.best,
            "history": [r.to_dict() for r in self.history],
            "metrics": self.metrics,
            "best_epoch": self.best_epoch,
            "monitor": self.monitor,
            "seconds": self.seconds,
            "samples_per_second": self.samples_per_second,
            "stopped_early": self.stopped_early,
            "checkpoint": str(self.checkpoint) if self.checkpoint else None,
            "privacy": dict(self.privacy) if self.privacy is not None else None,
        }
