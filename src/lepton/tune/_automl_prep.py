"""Preprocessing decided from the columns, held by a ``TabularPipeline``.

Each raw column is looked at once, on the training rows (NaN = missing):

- all values equal (or all missing): dropped; a missing indicator is kept when the
  column has missing values, since then only missingness carries information;
- integer-valued with 3 to ``MAX_LEVELS`` distinct values: a numeric tensor cannot say
  whether such codes are nominal (a colour id) or ordered (a count), so both readings
  are given: one 0/1 column per level (an unseen level sets none), plus the code itself
  standardized. Feature selection then drops whichever reading does not help;
- anything else (floats, two-valued flags, integer codes with many levels, which are
  treated as ordinal): standardized, ``(x - mean) / std``;
- a missing value is replaced by the column's median (by its most frequent level for
  level columns), and every column with missing values gets a 0/1 missing indicator.

The statistics are computed on all training rows before cross-validation, a common
shortcut (FLAML does the same) whose leak is one median/mean per column.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from lepton.models import TabularPipeline

__all__ = ["MAX_LEVELS", "ColumnPlan", "plan_columns"]

MAX_LEVELS = 10
Matrix = npt.NDArray[np.float64]


@dataclass
class ColumnPlan:
    """How each raw column becomes features (the arguments of a ``TabularPipeline``)."""

    input_names: list[str]
    fill: Matrix
    numeric_column: list[int] = field(default_factory=list)
    mean: list[float] = field(default_factory=list)
    scale: list[float] = field(default_factory=list)
    level_column: list[int] = field(default_factory=list)
    level_value: list[float] = field(default_factory=list)
    missing_column: list[int] = field(default_factory=list)
    kinds: dict[str, str] = field(default_factory=dict)

    @property
    def feature_names(self) -> list[str]:
        """Names of the preprocessed features, in the pipeline's order."""
        names = self.input_names
        return (
            [names[j] for j in self.numeric_column]
            + [
                f"{names[j]}={v:g}"
                for j, v in zip(self.level_column, self.level_value, strict=True)
            ]
            + [f"{names[j]}_missing" for j in self.missing_column]
        )

    def pipeline(
        self,
        head: dict[str, Any],
        kept: list[int] | None = None,
        num_classes: int | None = None,
        target: tuple[float, float] = (0.0, 1.0),
    ) -> TabularPipeline:
        """A ``TabularPipeline`` holding this plan, the ``kept`` features and ``head``."""
        names = self.feature_names
        kept = list(range(len(names))) if kept is None else kept
        module = TabularPipeline(
            in_features=len(self.input_names),
            numeric=len(self.numeric_column),
            levels=len(self.level_column),
            missing=len(self.missing_column),
            kept=len(kept),
            head=head,
            num_classes=num_classes,
            input_names=self.input_names,
            feature_names=[names[i] for i in kept],
        )
        f64, i64 = torch.float64, torch.int64
        buffers = {
            "fill": torch.as_tensor(self.fill, dtype=f64),
            "numeric_column": torch.as_tensor(self.numeric_column, dtype=i64),
            "mean": torch.as_tensor(self.mean, dtype=f64),
            "scale": torch.as_tensor(self.scale, dtype=f64),
            "level_column": torch.as_tensor(self.level_column, dtype=i64),
            "level_value": torch.as_tensor(self.level_value, dtype=f64),
            "missing_column": torch.as_tensor(self.missing_column, dtype=i64),
            "kept_index": torch.as_tensor(kept, dtype=i64),
            "target_mean": torch.tensor([target[0]], dtype=f64),
            "target_scale": torch.tensor([target[1]], dtype=f64),
        }
        with torch.no_grad():
            for name, value in buffers.items():
                getattr(module, name).copy_(value.reshape(getattr(module, name).shape))
        return module.eval()

    def transform(self, x: Matrix) -> Matrix:
        """The preprocessed features ``(N, p)`` of raw rows, through the pipeline's own code."""
        linear = {"in_features": len(self.feature_names), "out_features": 1, "hidden": []}
        probe = self.pipeline({"name": "mlp", "config": linear})  # any head: only features()
        with torch.no_grad():
            return probe.features(torch.as_tensor(x)).numpy()


def plan_columns(x: Matrix, names: list[str]) -> ColumnPlan:
    """Decide, from the training rows ``x`` ``(N, d)``, how each column is preprocessed."""
    plan = ColumnPlan(input_names=list(names), fill=np.zeros(x.shape[1]))
    for j, name in enumerate(names):
        column = x[:, j]
        present = column[~np.isnan(column)]
        has_missing = len(present) < len(column)
        distinct = np.unique(present)
        if has_missing:
            plan.missing_column.append(j)
        if len(distinct) <= 1:
            plan.kinds[name] = "missing indicator only" if has_missing else "constant: dropped"
            plan.fill[j] = distinct[0] if len(distinct) else 0.0
            continue
        integer = bool(np.all(distinct == np.round(distinct)))
        if integer and 3 <= len(distinct) <= MAX_LEVELS:
            values, counts = np.unique(present, return_counts=True)
            plan.fill[j] = values[counts.argmax()]
            plan.level_column += [j] * len(distinct)
            plan.level_value += [float(v) for v in distinct]
            plan.kinds[name] = f"one-hot ({len(distinct)} levels) + code"
        else:
            plan.fill[j] = float(np.median(present))
            plan.kinds[name] = (
                "ordinal code" if integer and len(distinct) > MAX_LEVELS else "numeric"
            )
        filled = np.where(np.isnan(column), plan.fill[j], column)
        std = float(filled.std())
        plan.numeric_column.append(j)
        plan.mean.append(float(filled.mean()))
        plan.scale.append(std if std > 0 else 1.0)
        if has_missing:
            plan.kinds[name] += ", median/mode imputed + missing indicator"
    return plan
