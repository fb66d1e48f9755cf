"""``TabularPipeline``: tabular preprocessing and a model head in one ``nn.Module``.

The preprocessing is held in buffers, so the whole pipeline is tensors plus a JSON config:
``lp.register`` stores it as safetensors and the registry rebuilds it with ``build``,
without pickle. ``lp.automl`` returns one; it can also be assembled by hand.

On a row ``x`` of ``in_features`` raw numbers (float64 throughout), ``forward`` does::

    missing = isnan(x)
    x = where(missing, fill, x)                              # median / most frequent value
    z = [(x[numeric] - mean) / scale,                        # standardized numbers
         x[level_column] == level_value,                     # one-hot levels (0/1)
         missing[missing_column]]                            # missing indicators (0/1)
    out = head(z[kept])                                      # the selected features

A level unseen during fit sets none of its column's one-hot entries. For regression, the
head's output is mapped back to the target's units with ``target_mean``/``target_scale``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from lepton.errors import ShapeError
from lepton.models._checks import ArgChecker
from lepton.models._registry import build, register_model

__all__ = ["TabularEnsemble", "TabularPipeline"]

_F64 = torch.float64


@register_model("tabular_pipeline")
class TabularPipeline(nn.Module):
    """Impute, standardize, one-hot encode and select tabular features, then a head.

    Args:
        in_features: Raw numbers per row (a ``(B, ...)`` input is flattened to this).
        numeric: Columns standardized as numbers.
        levels: One-hot entries in total (one per (column, level) pair).
        missing: Columns that get a missing-value indicator.
        kept: Features kept by feature selection (the head's ``in_features``).
        head: The spec of a zoo model over the kept features, e.g.
            ``{"name": "mlp", "config": {"in_features": 8, "num_classes": 2, "hidden": []}}``
            (a linear model), an MLP, or a ``"tree_ensemble"``.
        num_classes: Number of classes; the output is ``(B, num_classes)`` logits. None
            for regression (the output is ``(B, 1)`` values).
        input_names: Names of the raw columns (for reports and explanations).
        feature_names: Names of the kept features, in head order.

    Example:
        >>> pipe = TabularPipeline(in_features=3, numeric=3, levels=0, missing=0, kept=3,
        ...     head={"name": "mlp", "config": {"in_features": 3, "num_classes": 2,
        ...                                     "hidden": []}}, num_classes=2)
        >>> pipe(torch.zeros(5, 3)).shape
        torch.Size([5, 2])
    """

    fill: torch.Tensor
    numeric_column: torch.Tensor
    mean: torch.Tensor
    scale: torch.Tensor
    level_column: torch.Tensor
    level_value: torch.Tensor
    missing_column: torch.Tensor
    kept_index: torch.Tensor
    target_mean: torch.Tensor
    target_scale: torch.Tensor

    def __init__(
        self,
        in_features: int,
        numeric: int,
        levels: int,
        missing: int,
        kept: int,
        head: Mapping[str, Any],
        num_classes: int | None = None,
        input_names: Sequence[str] | None = None,
        feature_names: Sequence[str] | None = None,
    ) -> None:
        super().__init__()
        check = ArgChecker(
            "TabularPipeline",
            "TabularPipeline(in_features=3, numeric=3, levels=0, missing=0, kept=3, head="
            "{'name': 'mlp', 'config': {'in_features': 3, 'num_classes': 2, 'hidden': []}}, "
            "num_classes=2)",
        )
        self.in_features = check.int_("in_features", in_features, 1)
        check.int_("numeric", numeric, 0)
        check.int_("levels", levels, 0)
        check.int_("missing", missing, 0)
        if numeric + levels + missing < 1:
            raise check.fail("numeric + levels + missing must be >= 1 (no features left)")
        check.int_("kept", kept, 1)
        if num_classes is not None:
            check.int_("num_classes", num_classes, 2)
        self.num_classes = num_classes
        self.input_names = list(input_names) if input_names is not None else None
        self.feature_names = list(feature_names) if feature_names is not None else None
        for name, size in (("input_names", in_features), ("feature_names", kept)):
            names = getattr(self, name)
            if names is not None and len(names) != size:
                raise check.fail(f"{name} must have {size} entries, got {len(names)}")
        self.register_buffer("fill", torch.zeros(in_features, dtype=_F64))
        self.register_buffer("numeric_column", torch.zeros(numeric, dtype=torch.int64))
        self.register_buffer("mean", torch.zeros(numeric, dtype=_F64))
        self.register_buffer("scale", torch.ones(numeric, dtype=_F64))
        self.register_buffer("level_column", torch.zeros(levels, dtype=torch.int64))
        self.register_buffer("level_value", torch.zeros(levels, dtype=_F64))
        self.register_buffer("missing_column", torch.zeros(missing, dtype=torch.int64))
        self.register_buffer("kept_index", torch.arange(kept, dtype=torch.int64))
        self.register_buffer("target_mean", torch.zeros(1, dtype=_F64))
        self.register_buffer("target_scale", torch.ones(1, dtype=_F64))
        # float64 from the start, so a registered copy loads its float64 weights unrounded
        self.head = build(dict(head)).to(_F64)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The preprocessed, selected features ``(B, kept)`` the head sees."""
        x = x.reshape(x.shape[0], -1) if x.ndim >= 2 else x  # (B, in_features)
        if x.ndim != 2 or x.shape[1] != self.in_features:
            raise ShapeError(
                f"TabularPipeline expects {self.in_features} values per row, got shape "
                f"{tuple(x.shape)}; pass rows with the columns used in training, in order"
            )
        x = x.to(_F64)
        missing = x.isnan()
        x = torch.where(missing, self.fill, x)
        parts = [
            (x[:, self.numeric_column] - self.mean) / self.scale,  # (B, numeric)
            (x[:, self.level_column] == self.level_value).to(_F64),  # (B, levels)
            missing[:, self.missing_column].to(_F64),  # (B, missing)
        ]
        return torch.cat(parts, dim=1)[:, self.kept_index]  # (B, kept)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, num_classes)`` for classification, values ``(B, 1)`` for regression."""
        out: torch.Tensor = self.head(self.features(x))
        if self.num_classes is None:
            out = out * self.target_scale + self.target_mean
        return out


@register_model("tabular_ensemble")
class TabularEnsemble(nn.Module):
    """A weighted average of heads, each over its own columns of the features.

    Classification: the output is ``log(sum_i w_i softmax(head_i))``, logits whose softmax
    is the weighted average of the members' probabilities. Regression: ``sum_i w_i
    (head_i * scale_i + mean_i)``, each member in the target's units.

    Args:
        in_features: Features per row (a ``TabularPipeline``'s kept features).
        members: One ``{"head": spec, "columns": n, "weight": w}`` per member; the head
            reads ``n`` of the features (which ones is a buffer, ``columns_<i>``).
        num_classes: Number of classes, or None for regression.

    Example:
        >>> linear = {"name": "mlp", "config": {"in_features": 2, "num_classes": 2,
        ...                                     "hidden": []}}
        >>> both = TabularEnsemble(3, [{"head": linear, "columns": 2, "weight": 0.5},
        ...                            {"head": linear, "columns": 2, "weight": 0.5}], 2)
        >>> both(torch.zeros(4, 3)).shape
        torch.Size([4, 2])
    """

    def __init__(
        self,
        in_features: int,
        members: Sequence[Mapping[str, Any]],
        num_classes: int | None = None,
    ) -> None:
        super().__init__()
        check = ArgChecker(
            "TabularEnsemble",
            "TabularEnsemble(in_features=3, members=[{'head': spec, 'columns': 3, "
            "'weight': 1.0}], num_classes=2)",
        )
        self.in_features = check.int_("in_features", in_features, 1)
        if not members or not all({"head", "columns", "weight"} <= set(m) for m in members):
            raise check.fail("members must be a non-empty list of {head, columns, weight}")
        self.num_classes = num_classes
        self.weights = [float(m["weight"]) for m in members]
        self.heads = nn.ModuleList(build(dict(m["head"])).to(_F64) for m in members)
        for i, member in enumerate(members):
            columns = check.int_("columns", member["columns"], 1)
            self.register_buffer(f"columns_{i}", torch.arange(columns, dtype=torch.int64))
            self.register_buffer(f"target_{i}", torch.tensor([0.0, 1.0], dtype=_F64))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, num_classes)`` or values ``(B, 1)`` of the weighted members."""
        total: torch.Tensor | None = None
        for i, (head, weight) in enumerate(zip(self.heads, self.weights, strict=True)):
            columns: torch.Tensor = getattr(self, f"columns_{i}")
            target: torch.Tensor = getattr(self, f"target_{i}")
            out = head(z[:, columns])
            part = out.softmax(1) if self.num_classes else out * target[1] + target[0]
            total = weight * part if total is None else total + weight * part
        assert total is not None
        return total.clamp_min(1e-300).log() if self.num_classes else total
