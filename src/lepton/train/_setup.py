"""What ``fit`` checks and settles before the first step: the device, the arguments, a
trial forward pass, and the torch thread count.

Kept apart from the loop (:mod:`lepton.train._loop`) so the loop reads as the steps of an
epoch and nothing else.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from lepton.data import Dataset
from lepton.errors import LeptonError, ShapeError, TrainingError
from lepton.train._metrics import loss_function, to_float_batch

__all__ = ["best_is", "check_arguments", "check_compatible", "resolve_device", "threads"]


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` picks CUDA when present, else the CPU."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise TrainingError(f"unknown device {device!r}; use 'auto', 'cpu' or 'cuda'") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise TrainingError("device='cuda' but no CUDA GPU is visible; use device='auto'")
    return dev


def check_arguments(epochs: int, batch_size: int, lr: float, grad_clip: float | None) -> None:
    """Refuse numbers the loop cannot use, before any work."""
    if epochs < 1:
        raise TrainingError(f"epochs must be >= 1, got {epochs}")
    if batch_size < 1:
        raise TrainingError(f"batch_size must be >= 1, got {batch_size}")
    if not lr > 0:
        raise TrainingError(f"lr must be > 0, got {lr}; e.g. lr=1e-3")
    if grad_clip is not None and not grad_clip > 0:
        raise TrainingError(f"grad_clip must be > 0 or None, got {grad_clip}")


def check_compatible(model: nn.Module, ds: Dataset, dev: torch.device) -> None:
    """One tiny forward pass so shape mistakes surface as a clear error, not deep in torch."""
    if ds.targets is None:
        loss_function(None)
    x = to_float_batch(ds.features[:2], dev)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(x)
    except ShapeError as exc:
        raise ShapeError(f"{exc.message} Dataset {ds.name!r} gives {_input_text(ds)}.") from None
    except LeptonError:
        raise
    except (RuntimeError, ValueError, IndexError) as exc:
        raise ShapeError(
            f"{type(model).__name__} cannot take the inputs of dataset {ds.name!r}, "
            f"{_input_text(ds)} ({str(exc).splitlines()[0]}); build the model for this "
            f"input shape (e.g. MLP(in_features={ds.features[0].numel()}, ...))"
        ) from None
    finally:
        model.train(was_training)
    if ds.task == "classification":
        assert ds.targets is not None
        classes = int(ds.targets.max()) + 1
        # (N, K) logits, or (N, T, K) for one label per position of (N, T) targets
        if out.dim() != ds.targets.dim() + 1 or out.shape[-1] < classes:
            raise ShapeError(
                f"{type(model).__name__} outputs shape {tuple(out.shape)} but dataset "
                f"{ds.name!r} has labels up to {classes - 1}; build it with num_classes="
                f"{ds.num_classes or classes}"
            )
    elif ds.targets is not None and out.numel() != ds.targets[:2].numel():
        raise ShapeError(
            f"{type(model).__name__} outputs shape {tuple(out.shape)} per 2 samples but the "
            f"regression targets have shape {tuple(ds.targets[:2].shape)}; set out_features "
            f"to the number of targets"
        )


def _input_text(ds: Dataset) -> str:
    return f"inputs of shape {ds.input_shape} ({ds.features[0].numel()} values)"


@contextlib.contextmanager
def threads(num_threads: int | None) -> Iterator[None]:
    """Use ``num_threads`` torch CPU threads inside the block (unchanged when falsy)."""
    if not num_threads:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def best_is(monitor: str, value: float, best: float | None) -> bool:
    """Whether ``value`` of ``monitor`` beats ``best`` (higher wins for accuracy-like)."""
    if best is None:
        return True
    higher = monitor.endswith(("accuracy", "precision", "recall", "f1", "auc", "r2"))
    return value > best if higher else value < best
