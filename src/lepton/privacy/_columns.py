"""Declared columns: the public bounds, bins and categories that DP releases rely on.

A DP release of a column needs bounds that do not come from the data: the sensitivity
of a sum is the largest value one row may add, so a bound taken from the data would
itself leak the extreme rows. They are declared instead, by whoever knows the domain,
either with each call or once with the budget (``set_budget(..., columns=...)``):

- ``(lower, upper)`` or ``(lower, upper, bins)``: a numeric range (values are clipped to
  it; ``bins`` equal-width bins for histograms, default 10);
- a list of values ``[0, 1, 2]``: categories (a row with another value is not counted).

A column is a name in ``dataset.feature_names``, a feature index, or ``"target"``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from lepton.data import Dataset
from lepton.errors import PrivacyError

__all__ = [
    "ColumnSpec",
    "column_index",
    "column_values",
    "declared",
    "parse_column",
    "parse_columns",
]

DEFAULT_BINS = 10


@dataclass(frozen=True)
class ColumnSpec:
    """One declared column: a numeric range with bins, or a list of categories."""

    name: str
    lower: float | None = None
    upper: float | None = None
    bins: int = DEFAULT_BINS
    categories: tuple[float, ...] | None = None

    @property
    def cells(self) -> int:
        """How many histogram cells the column has."""
        return len(self.categories) if self.categories is not None else self.bins

    @property
    def span(self) -> tuple[float, float]:
        """``(lower, upper)`` of a numeric column."""
        if self.lower is None or self.upper is None:
            raise PrivacyError(f"column {self.name!r} has categories, not a numeric range")
        return self.lower, self.upper

    def edges(self) -> np.ndarray:
        """The ``bins + 1`` bin edges of a numeric column."""
        return np.linspace(*self.span, self.bins + 1)

    def to_json(self) -> dict[str, Any]:
        """JSON-safe form (stored with the budget)."""
        if self.categories is not None:
            return {"categories": list(self.categories)}
        return {"lower": self.lower, "upper": self.upper, "bins": self.bins}


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.number):
        raise PrivacyError(f"{what} must be a number, got {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise PrivacyError(f"{what} must be finite, got {value!r}")
    return number


def parse_column(name: str, spec: Any) -> ColumnSpec:
    """A :class:`ColumnSpec` from ``(lower, upper[, bins])``, a list of categories, or the
    JSON form.

    Example:
        >>> parse_column("age", (0, 100, 10)).edges()[:3]
        array([ 0., 10., 20.])
    """
    if isinstance(spec, ColumnSpec):
        return spec
    if isinstance(spec, Mapping):
        if "categories" in spec:
            return parse_column(name, list(spec["categories"]))
        spec = (spec.get("lower"), spec.get("upper"), spec.get("bins", DEFAULT_BINS))
    if isinstance(spec, list):
        if not spec:
            raise PrivacyError(f"column {name!r} declares no categories; list its values")
        values = tuple(_number(v, f"a category of {name!r}") for v in spec)
        if len(set(values)) != len(values):
            raise PrivacyError(f"column {name!r} declares a category twice: {spec}")
        return ColumnSpec(name, categories=values)
    if isinstance(spec, tuple) and len(spec) in (2, 3):
        lower = _number(spec[0], f"the lower bound of {name!r}")
        upper = _number(spec[1], f"the upper bound of {name!r}")
        bins = spec[2] if len(spec) == 3 else DEFAULT_BINS
        if lower >= upper:
            raise PrivacyError(f"column {name!r} needs lower < upper, got ({lower}, {upper})")
        if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
            raise PrivacyError(f"column {name!r} needs a positive whole number of bins")
        return ColumnSpec(name, lower, upper, bins)
    raise PrivacyError(
        f"column {name!r} is declared as {spec!r}; declare a range as a tuple "
        f"(lower, upper) or (lower, upper, bins), or categories as a list [0, 1, 2]"
    )


def parse_columns(columns: Mapping[str, Any]) -> dict[str, ColumnSpec]:
    """Every declared column, checked (see the module docstring for the forms)."""
    if not isinstance(columns, Mapping) or not columns:
        raise PrivacyError(
            'declare the columns to release, e.g. columns={"age": (0, 100, 10), "sex": [0, 1]}'
        )
    return {str(name): parse_column(str(name), spec) for name, spec in columns.items()}


def column_index(dataset: Dataset, column: str | int) -> int | None:
    """The feature index of ``column`` (``None`` for ``"target"``), checked against the
    dataset's shape and names, so a wrong name fails before any budget is spent."""
    if dataset.features.dim() != 2:
        raise PrivacyError(
            f"DP queries take a table of shape (rows, columns); {dataset.name!r} has features "
            f"of shape {tuple(dataset.features.shape)}"
        )
    names = dataset.feature_names or []
    if isinstance(column, str) and column in names:
        return names.index(column)
    if column == "target":
        if dataset.targets is None or dataset.targets.dim() != 1:
            raise PrivacyError(f"{dataset.name!r} has no one-dimensional target column")
        return None
    width = dataset.features.shape[1]
    if isinstance(column, int) and not isinstance(column, bool) and 0 <= column < width:
        return column
    known = ", ".join(names) if names else f"indices 0..{width - 1}"
    raise PrivacyError(f"{dataset.name!r} has no column {column!r}; its columns: {known}, target")


def column_values(dataset: Dataset, column: str | int) -> np.ndarray:
    """The column as float64 values, rows with a missing (NaN) value left out (a filter
    on each row alone, so it changes no sensitivity)."""
    index = column_index(dataset, column)
    tensor = dataset.targets if index is None else dataset.features[:, index]
    assert tensor is not None
    values = tensor.detach().cpu().double().numpy()
    return np.asarray(values[~np.isnan(values)])


def declared(
    columns: Mapping[str, Any] | None, stored: Mapping[str, Any], names: Sequence[str]
) -> dict[str, ColumnSpec]:
    """The specs of ``names``: from ``columns`` when given, else from the budget's
    declared columns; a column declared nowhere is refused (never read from the data)."""
    out: dict[str, ColumnSpec] = {}
    for name in names:
        if columns is not None and name in columns:
            out[name] = parse_column(name, columns[name])
        elif name in stored:
            out[name] = parse_column(name, stored[name])
        else:
            raise PrivacyError(
                f"column {name!r} has no declared bounds; pass them (e.g. bounds=(0, 100) or "
                f'columns={{"{name}": (0, 100, 10)}}) or declare them with the budget: '
                f'lp.privacy.set_budget(data, epsilon=..., columns={{"{name}": (0, 100)}}); '
                f"they are never taken from the data, which would leak its extremes"
            )
    return out
