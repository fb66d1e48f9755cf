"""``explain``: attributions of one batch of inputs, by any method, on any zoo model."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from lepton.errors import ExplainError
from lepton.explain._attribution import Attribution
from lepton.explain._inputs import (
    as_batch,
    eval_mode,
    model_outputs,
    resolve_model,
    resolve_targets,
)
from lepton.explain._methods import attribute, captum, check_method, needs_gradients

__all__ = ["explain"]


def explain(
    model: nn.Module | str,
    inputs: Any,
    method: str = "integrated_gradients",
    target: int | Sequence[int] | torch.Tensor | None = None,
    baseline: float | torch.Tensor | Any | None = None,
    *,
    feature_names: Sequence[str] | None = None,
    **options: Any,
) -> Attribution:
    """Attribute a model's outputs to its inputs: which pixels, features or tokens drove them.

    The model runs in eval mode (each submodule's mode is restored afterwards). Inputs
    are one example or a batch; the attributions come back with the inputs' shape.

    Args:
        model: An ``nn.Module`` (any zoo model) or a registry reference such as
            ``"mnist-convnet:1"`` or ``"mnist-convnet@production"``.
        inputs: A tensor, a numpy array or a :class:`~lepton.data.Dataset` (e.g.
            ``test.subset(range(8))``), batched or a single example. Integer token ids
            for a model with an embedding layer are explained per token.
        method: One of :data:`METHODS`: ``"integrated_gradients"`` (default; text too),
            ``"saliency"``, ``"occlusion"``, ``"gradcam"`` (images), ``"shap"`` (Kernel SHAP)
            or ``"permutation"`` (a batch of two or more).
        target: The class to explain: one for all, one per example, or ``None`` for each
            example's predicted class.
        baseline: The reference input of integrated gradients, occlusion and SHAP: a
            number, one example or the batch; default zeros (padding ids for tokens).
        feature_names: Names of tabular features (default: a Dataset's own).
        **options: Per method: ``n_steps``, ``internal_batch_size`` and ``layer`` (text)
            for integrated gradients; ``abs`` for saliency; ``window`` and ``stride`` for
            occlusion; ``layer`` (a module or its name; default the last convolution) and
            ``relu`` for gradcam; ``n_samples``, ``patch``, ``feature_mask`` and ``seed``
            for shap; ``patch``, ``feature_mask`` and ``seed`` for permutation;
            ``perturbations_per_eval`` for the perturbation methods.

    Returns:
        An :class:`Attribution` (``.numpy()``, ``.plot()``, ``.top_features(k)``).

    Raises:
        ExplainError: An unknown method or option, a target out of range, gradcam on a
            model without convolutional layers, a gradient method on a model without
            gradients (an ONNX version).
        ShapeError: Inputs the model cannot take.
        MissingExtraError: Captum is not installed (``pip install 'lepton[explain]'``).

    Example:
        >>> import lepton as lp
        >>> from lepton.explain import explain
        >>> model = lp.load_model("mnist-convnet@production")  # doctest: +SKIP
        >>> test = lp.data.load("mnist", split="test")  # doctest: +SKIP
        >>> result = explain(model, test.subset(range(4)), method="integrated_gradients")
        ...  # doctest: +SKIP
        >>> result.targets, float(result.convergence_delta.abs().max()) < 0.05  # doctest: +SKIP
        ([7, 2, 1, 0], True)
        >>> png = result.plot("seven.png")  # doctest: +SKIP
    """
    check_method(method, options)  # the name and options: before anything is loaded
    captum()
    net = resolve_model(model)
    # Gradients are needed even when the caller runs under no_grad or inference_mode.
    with torch.inference_mode(False), torch.enable_grad(), eval_mode(net):
        batch = as_batch(net, inputs, feature_names)
        check_method(method, options, batch.kind)
        outputs = model_outputs(net, batch.x)
        targets = resolve_targets(outputs, target)
        try:
            raw = attribute(method, net, batch, outputs, targets, baseline, options)
        except RuntimeError as exc:
            if needs_gradients(method) and "does not require grad" in str(exc):
                raise ExplainError(
                    f"{type(net).__name__} has no gradients (an ONNX version, or a forward "
                    f"under torch.no_grad); use method='occlusion' or 'shap', which only run "
                    f"the model, or explain the PyTorch version"
                ) from None
            raise
    return Attribution(
        attributions=raw.attributions.detach().float().cpu().reshape(batch.shape),
        inputs=batch.x.detach().cpu(),
        outputs=outputs.cpu(),
        targets=targets,
        method=method,
        kind=batch.kind,
        convergence_delta=raw.delta.detach().float().cpu() if raw.delta is not None else None,
        feature_names=batch.feature_names,
    )
