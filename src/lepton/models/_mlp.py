"""A multi-layer perceptron for classification or regression on flattened inputs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

from lepton.errors import ShapeError
from lepton.models._checks import ArgChecker
from lepton.models._registry import register_model

__all__ = ["MLP"]

_ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh}


@register_model("mlp")
class MLP(nn.Module):
    """Fully connected network: ``(Linear -> activation -> Dropout) * len(hidden) -> Linear``.

    Any input ``(B, ...)`` is flattened to ``(B, in_features)`` first.

    Args:
        in_features: Number of input values per example after flattening.
        num_classes: Number of classes (>= 2) for classification; outputs logits.
        out_features: Number of outputs for regression. Give exactly one of
            ``num_classes`` and ``out_features``.
        hidden: Widths of the hidden layers; empty for a linear model.
        dropout: Dropout probability after each hidden activation, in [0, 1).
        activation: ``"relu"``, ``"gelu"`` or ``"tanh"``.

    Example:
        >>> model = MLP(in_features=784, num_classes=10, hidden=[128])
        >>> model(torch.zeros(2, 28, 28)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int | None = None,
        out_features: int | None = None,
        hidden: Sequence[int] = (256, 256),
        dropout: float = 0.0,
        activation: Literal["relu", "gelu", "tanh"] = "relu",
    ) -> None:
        super().__init__()
        check = ArgChecker("MLP", "MLP(in_features=784, num_classes=10, hidden=[256, 256])")
        self.in_features = check.int_("in_features", in_features, 1)
        if (num_classes is None) == (out_features is None):
            raise check.fail(
                "give exactly one of num_classes (classification) or out_features "
                f"(regression), got num_classes={num_classes!r}, out_features={out_features!r}"
            )
        if num_classes is not None:
            outputs = check.int_("num_classes", num_classes, 2)
        else:
            outputs = check.int_("out_features", out_features, 1)
        widths = check.ints("hidden", hidden, allow_empty=True)
        p = check.fraction("dropout", dropout)
        act = _ACTIVATIONS[check.choice("activation", activation, list(_ACTIVATIONS))]

        layers: list[nn.Module] = []
        width = self.in_features
        for h in widths:
            layers += [nn.Linear(width, h), act()]
            if p > 0:
                layers.append(nn.Dropout(p))
            width = h
        layers.append(nn.Linear(width, outputs))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``(B, ...)`` inputs to ``(B, num_classes or out_features)`` outputs."""
        if x.ndim >= 2:
            x = x.reshape(x.shape[0], -1)  # (B, in_features)
        if x.ndim < 2 or x.shape[1] != self.in_features:
            raise ShapeError(
                f"MLP expects {self.in_features} values per example, got shape {tuple(x.shape)}; "
                f"pass inputs shaped (B, {self.in_features}) or rebuild with "
                "in_features=<values per example>."
            )
        return self.layers(x)  # type: ignore[no-any-return]
