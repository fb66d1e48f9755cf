"""The attribution methods, each one Captum class with defaults that suit Lepton's zoo.

| method | Captum | baseline | notes |
|---|---|---|---|
| ``integrated_gradients`` | ``IntegratedGradients`` | zeros | completeness: ``convergence_delta`` |
| (text) | ``LayerIntegratedGradients`` | padding ids | on the embedding, summed over its width |
| ``saliency`` | ``Saliency`` | none | ``abs(grad)`` unless ``abs=False`` |
| ``occlusion`` | ``Occlusion`` | zeros | 4x4 windows (stride 2) on images, one feature on rows |
| ``gradcam`` | ``LayerGradCam`` | none | last convolution, upsampled to the image |
| ``shap`` | ``KernelShap`` | zeros | 4x4 patches on images; sums to ``f(x) - f(baseline)`` |
| ``permutation`` | ``FeaturePermutation`` | none | permutes within the batch (two or more inputs) |

Captum is imported on first use, so ``import lepton`` never needs it.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np
import torch
from torch import nn

from lepton.errors import ExplainError, MissingExtraError, ShapeError
from lepton.explain._inputs import Batch
from lepton.explain._layers import gradcam, picked, token_integrated_gradients

__all__ = ["METHODS", "Raw", "attribute", "captum", "check_method", "needs_gradients"]

METHODS: tuple[str, ...] = (
    "integrated_gradients",
    "saliency",
    "occlusion",
    "gradcam",
    "shap",
    "permutation",
)
"""Every ``method=`` that :func:`~lepton.explain.explain` takes."""

_GRADIENT = frozenset({"integrated_gradients", "saliency", "gradcam"})
_OPTIONS: dict[str, frozenset[str]] = {
    "integrated_gradients": frozenset({"n_steps", "internal_batch_size", "layer"}),
    "saliency": frozenset({"abs"}),
    "occlusion": frozenset({"window", "stride", "perturbations_per_eval"}),
    "gradcam": frozenset({"layer", "relu"}),
    "shap": frozenset({"n_samples", "feature_mask", "patch", "perturbations_per_eval", "seed"}),
    "permutation": frozenset({"feature_mask", "patch", "perturbations_per_eval", "seed"}),
}
_PATCH = 4  # pixels a side of one image feature for shap/permutation, and of an occlusion


@dataclass(frozen=True)
class Raw:
    """A method's attributions (the batch's shape; ``(B, T)`` for tokens) and IG's delta."""

    attributions: torch.Tensor
    delta: torch.Tensor | None = None


def captum() -> ModuleType:
    """``captum.attr``, or an error that says how to install it."""
    try:
        return importlib.import_module("captum.attr")
    except ImportError:
        raise MissingExtraError(
            "explanations need Captum, which is not installed: pip install 'lepton[explain]'"
        ) from None


def needs_gradients(method: str) -> bool:
    """Whether ``method`` differentiates the model (the others only run it)."""
    return method in _GRADIENT


def check_method(method: str, options: dict[str, Any], kind: str | None = None) -> None:
    """Refuse a method, an option or (when given) an input kind that cannot work.

    Raises:
        ExplainError: What is wrong, and what to pass instead.
    """
    if method not in METHODS:
        raise ExplainError(f"unknown method {method!r}; use one of {', '.join(METHODS)}")
    unknown = sorted(set(options) - _OPTIONS[method])
    if unknown:
        takes = ", ".join(sorted(_OPTIONS[method])) or "no options"
        raise ExplainError(
            f"method {method!r} has no option {', '.join(unknown)}; it takes {takes}"
        )
    if kind is None:
        return
    if kind == "text" and method != "integrated_gradients":
        raise ExplainError(
            f"token ids are explained with method='integrated_gradients' (one attribution per "
            f"token, through the embedding layer); {method!r} cannot perturb token ids"
        )
    if method == "gradcam" and kind != "image":
        raise ExplainError(
            f"gradcam explains images through a convolutional layer; these inputs are {kind}: "
            f"use 'integrated_gradients', 'occlusion' or 'shap'"
        )


def attribute(
    method: str,
    model: nn.Module,
    batch: Batch,
    outputs: torch.Tensor,
    targets: list[int] | None,
    baseline: Any,
    options: dict[str, Any],
) -> Raw:
    """Run ``method`` on ``batch`` (the model's ``outputs`` on it known) for ``targets``."""
    attr = captum()
    forward = _forward(model)
    x = batch.x
    if method == "integrated_gradients":
        if batch.kind == "text":
            tokens, delta = token_integrated_gradients(
                attr, model, forward, x, outputs, targets, baseline, options
            )
            return Raw(tokens, delta)
        start = _baseline(batch, baseline)
        a = attr.IntegratedGradients(forward).attribute(
            x, baselines=start, target=targets, n_steps=int(options.get("n_steps", 50)),
            internal_batch_size=options.get("internal_batch_size"),
        )  # fmt: skip
        # Captum's own delta runs the model on x again: its outputs are known already
        with torch.no_grad():
            gap = picked(outputs, targets) - picked(forward(start), targets)
        return Raw(a, a.reshape(len(a), -1).sum(dim=1) - gap)
    if method == "saliency":
        grad_x = x.detach().requires_grad_()
        return Raw(
            attr.Saliency(forward).attribute(grad_x, target=targets, abs=options.get("abs", True))
        )
    if method == "occlusion":
        return Raw(_occlusion(attr, forward, batch, targets, baseline, options))
    if method == "gradcam":
        return Raw(gradcam(attr, model, forward, x, targets, options))
    mask = options.get("feature_mask")
    if mask is None and batch.kind == "image":
        mask = _patch_mask(x, int(options.get("patch", _PATCH)))
    elif mask is not None:
        mask = torch.as_tensor(mask, device=x.device).long()
    per_eval = int(options.get("perturbations_per_eval", _per_eval(x)))
    with _seeded(int(options.get("seed", 0))):
        if method == "shap":
            features = int(mask.max()) + 1 if mask is not None else x[0].numel()
            samples = int(options.get("n_samples", min(1000, max(200, 10 * features))))
            with warnings.catch_warnings():  # one linear model per example is what we want
                warnings.filterwarnings("ignore", message=".*multiple inputs.*")
                a = attr.KernelShap(forward).attribute(
                    x, baselines=_baseline(batch, baseline), target=targets,
                    feature_mask=mask, n_samples=samples, perturbations_per_eval=per_eval,
                )  # fmt: skip
            return Raw(a)
        if x.shape[0] < 2:
            raise ExplainError(
                "permutation shuffles each feature across the batch, so it needs two or more "
                "inputs; pass a batch, or use lepton.explain.permutation_importance for a "
                "model's global importance on a dataset"
            )
        perm = attr.FeaturePermutation(forward)
        return Raw(
            perm.attribute(x, target=targets, feature_mask=mask, perturbations_per_eval=per_eval)
        )


def _per_eval(x: torch.Tensor) -> int:
    """Perturbed copies per forward pass: few passes (each has a fixed cost), ~16 MB each."""
    return max(1, min(256, (1 << 22) // max(1, x[0].numel())))


def _forward(model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    def forward(x: torch.Tensor) -> torch.Tensor:
        out = model(x)
        return out.reshape(out.shape[0], -1) if out.ndim > 2 else out  # type: ignore[no-any-return]

    return forward


def _baseline(batch: Batch, baseline: Any) -> torch.Tensor:
    x = batch.x
    if baseline is None:
        return torch.zeros_like(x)
    if isinstance(baseline, (int, float)) and not isinstance(baseline, bool):
        return torch.full_like(x, float(baseline))
    b = torch.as_tensor(
        np.asarray(baseline) if not isinstance(baseline, torch.Tensor) else baseline
    )
    b = b.to(device=x.device, dtype=x.dtype)
    if tuple(b.shape) == batch.shape and b.shape != x.shape:  # one example, as the caller's
        b = b.reshape(x.shape[1:])
    try:
        return b.expand_as(x).contiguous()
    except RuntimeError:
        raise ShapeError(
            f"baseline of shape {tuple(b.shape)} does not fit inputs of shape {batch.shape}; "
            f"pass a number, one example {tuple(x.shape[1:])} or the whole batch"
        ) from None


def _occlusion(
    attr: ModuleType,
    forward: Callable[[torch.Tensor], torch.Tensor],
    batch: Batch,
    targets: list[int] | None,
    baseline: Any,
    options: dict[str, Any],
) -> torch.Tensor:
    x = batch.x
    image = batch.kind == "image"
    window = int(options.get("window", _PATCH if image else 1))
    stride = int(options.get("stride", max(1, window // 2) if image else window))
    if window < 1 or stride < 1:
        raise ExplainError(f"window and stride must be >= 1, got window={window}, stride={stride}")
    if image:
        # whole channels at once: a window covers a patch of every channel
        lead = (x.shape[1],) if x.ndim == 4 else ()
        shape: tuple[int, ...] = (*lead, min(window, x.shape[-2]), min(window, x.shape[-1]))
        strides: tuple[int, ...] = (*lead, stride, stride)
    else:
        shape = (1,) * (x.ndim - 2) + (min(window, x.shape[-1]),)
        strides = (1,) * (x.ndim - 2) + (stride,)
    per_eval = int(options.get("perturbations_per_eval", _per_eval(x)))
    occlusion = attr.Occlusion(forward)
    return occlusion.attribute(  # type: ignore[no-any-return]
        x, sliding_window_shapes=shape, strides=strides, baselines=_baseline(batch, baseline),
        target=targets, perturbations_per_eval=per_eval,
    )  # fmt: skip


def _patch_mask(x: torch.Tensor, patch: int) -> torch.Tensor:
    """Feature ids of ``patch`` x ``patch`` squares, shared by every channel."""
    if patch < 1:
        raise ExplainError(f"patch must be >= 1 pixel, got {patch}")
    height, width = x.shape[-2:]
    per_row = (width + patch - 1) // patch
    rows = torch.arange(height, device=x.device) // patch
    cols = torch.arange(width, device=x.device) // patch
    ids = rows[:, None] * per_row + cols[None, :]  # (H, W)
    return ids.reshape((1,) * (x.ndim - 2) + (height, width))


@contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Sampling methods draw from torch's generator: fork it so results repeat."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield
