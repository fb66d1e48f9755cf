"""What ``explain`` is given, made uniform: a module, a batch on its device, target classes.

A model may be an ``nn.Module`` or a registry reference; inputs may be a tensor, a numpy
array, a :class:`~lepton.data.Dataset` (or the ``(features, targets)`` pair that slicing
one returns), batched or a single example. Everything downstream sees a batch ``(B, ...)``
and knows its kind: ``"image"`` (``(B, H, W)`` or ``(B, C, H, W)``), ``"tabular"``
(``(B, F)``) or ``"text"`` (integer token ids ``(B, T)`` for a model with an embedding).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from lepton.data import Dataset
from lepton.errors import ExplainError, LeptonError, ShapeError

__all__ = [
    "Batch",
    "InputKind",
    "as_batch",
    "embedding_layer",
    "eval_mode",
    "model_outputs",
    "resolve_model",
    "resolve_targets",
]

InputKind = Literal["image", "tabular", "text"]


@dataclass(frozen=True)
class Batch:
    """Inputs as one batch on the model's device.

    Attributes:
        x: The batch ``(B, ...)``.
        shape: The caller's shape; attributions are returned in it.
        kind: ``"image"``, ``"tabular"`` or ``"text"``.
        feature_names: Names of tabular features (or tokens), when known.
    """

    x: torch.Tensor
    shape: tuple[int, ...]
    kind: InputKind
    feature_names: list[str] | None


def resolve_model(model: nn.Module | str) -> nn.Module:
    """The module itself, or the registered version a reference names (``"name:1"``)."""
    if isinstance(model, nn.Module):
        return model
    if isinstance(model, str):
        from lepton.registry import load_model

        return load_model(model)
    hint = (
        "; a TextClassifier on raw strings is explained by lepton.explain.explain_text(clf, texts)"
        if type(model).__name__ == "TextClassifier"
        else ""
    )
    raise ExplainError(
        f"model must be an nn.Module or a registry reference such as 'mnist-convnet:1' or "
        f"'mnist-convnet@production', got {type(model).__name__}{hint}"
    )


def embedding_layer(model: nn.Module) -> nn.Embedding | None:
    """The token embedding: the first ``nn.Embedding`` registered (positions come after)."""
    return next((m for m in model.modules() if isinstance(m, nn.Embedding)), None)


def _device(model: nn.Module) -> torch.device:
    first = next(model.parameters(), None)
    return first.device if first is not None else torch.device("cpu")


def _features(inputs: Any) -> tuple[torch.Tensor, list[str] | None]:
    if isinstance(inputs, Dataset):
        names = inputs.feature_names
        return inputs.features, [str(n) for n in names] if names is not None else None
    if (
        isinstance(inputs, tuple)
        and len(inputs) == 2
        and all(isinstance(part, torch.Tensor) for part in inputs)
    ):
        return inputs[0], None  # ``dataset[i:j]``: (features, targets)
    if isinstance(inputs, torch.Tensor):
        return inputs, None
    try:
        array = np.asarray(inputs)
    except (TypeError, ValueError) as exc:
        raise ShapeError(
            f"inputs must be a tensor, a numpy array or a Dataset, got "
            f"{type(inputs).__name__} ({exc})"
        ) from None
    if array.dtype == object or array.dtype.kind not in "biuf":
        raise ShapeError(
            f"inputs must be numbers (a tensor, a numpy array or a Dataset), got dtype "
            f"{array.dtype}; encode strings (tokenize text) first"
        )
    return torch.from_numpy(np.array(array)), None


def _single(model: nn.Module, x: torch.Tensor, tokens: bool) -> bool:
    """Whether ``x`` is one example without its batch dimension."""
    if x.ndim <= 1:
        return True
    in_features = getattr(model, "in_features", None)
    if isinstance(in_features, int) and not tokens:
        return x.numel() == in_features and x.shape[0] != 1
    in_channels = getattr(model, "in_channels", None)
    if isinstance(in_channels, int):
        # (H, W) for a one-channel model, (C, H, W) for a model of C > 1 channels
        return x.ndim == 2 or (x.ndim == 3 and in_channels > 1 and x.shape[0] == in_channels)
    return False


def as_batch(model: nn.Module, inputs: Any, feature_names: Sequence[str] | None) -> Batch:
    """Inputs as a batch on ``model``'s device, with their kind.

    Raises:
        ShapeError: Inputs that are not numbers, or an empty batch.
    """
    x, names = _features(inputs)
    if x.numel() == 0:
        raise ShapeError("inputs are empty; pass at least one example")
    tokens = not (x.is_floating_point() or x.is_complex() or x.dtype == torch.bool)
    tokens = tokens and embedding_layer(model) is not None
    shape = tuple(x.shape)
    if _single(model, x, tokens):
        x = x.unsqueeze(0)
    kind: InputKind = "text" if tokens else "image" if x.ndim >= 3 else "tabular"
    x = x.long() if tokens else x.float()
    if not bool(torch.isfinite(x.float()).all()):
        raise ShapeError("inputs hold NaN or infinity; impute or drop those values first")
    given = [str(n) for n in feature_names] if feature_names is not None else names
    if given is not None and kind != "image" and len(given) != x[0].numel():
        raise ExplainError(
            f"{len(given)} feature names for {x[0].numel()} values per example; pass one name "
            f"per feature (or per token)"
        )
    x = x.to(_device(model)).detach().clone()  # never a view of the caller's data
    return Batch(x=x, shape=shape, kind=kind, feature_names=given)


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Run ``model`` in eval mode (no dropout, frozen batch-norm), then restore every
    submodule's own mode, so a model that is being trained can be explained in between."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training


def model_outputs(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The model's outputs ``(B, K)`` (or ``(B,)``) on ``x``, checking it can be explained.

    Raises:
        ShapeError: The model cannot run on inputs of this shape.
        ExplainError: The model does not return one tensor.
    """
    try:
        with torch.no_grad():
            out = model(x)
    except LeptonError:
        raise
    except (RuntimeError, ValueError, IndexError, TypeError) as exc:
        raise ShapeError(
            f"{type(model).__name__} cannot run on inputs of shape {tuple(x.shape)} "
            f"({type(exc).__name__}: {str(exc)[:200]}); pass inputs shaped like its training "
            f"data, with the batch dimension first"
        ) from None
    if not isinstance(out, torch.Tensor):
        raise ExplainError(
            f"{type(model).__name__} returned {type(out).__name__}; explanations need a model "
            f"that returns one tensor of outputs (logits) per example"
        )
    return out.reshape(out.shape[0], -1) if out.ndim > 2 else out


def resolve_targets(outputs: torch.Tensor, target: Any) -> list[int] | None:
    """One target class per example: ``target`` checked, or the predicted class.

    Raises:
        ExplainError: A target out of range, or not one class (or one per example).
    """
    batch = outputs.shape[0]
    if outputs.ndim == 1:  # one output per example: nothing to choose
        if target not in (None, 0):
            raise ExplainError(
                f"the model has one output per example; pass target=None, got {target!r}"
            )
        return None
    classes = outputs.shape[1]
    if target is None:
        return [int(i) for i in outputs.argmax(dim=1).tolist()]
    if isinstance(target, (torch.Tensor, np.ndarray, np.generic)):
        target = target.tolist()
    wanted = [target] * batch if isinstance(target, int) else target
    if not isinstance(wanted, (list, tuple)) or len(wanted) != batch:
        raise ExplainError(
            f"target must be one class (an int) or one class per example ({batch}), got "
            f"{target!r}; pass target=None for each example's predicted class"
        )
    for t in wanted:
        if isinstance(t, bool) or not isinstance(t, int) or not 0 <= t < classes:
            raise ExplainError(
                f"target {t!r} is out of range: the model has {classes} outputs (classes 0 to "
                f"{classes - 1}); pass target=None for the predicted class"
            )
    return [int(t) for t in wanted]
