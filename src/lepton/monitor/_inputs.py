"""Reference and current data, whatever their container, as one table of columns.

A lepton ``Dataset``, a NumPy array or torch tensor, a pandas ``DataFrame`` or ``Series``,
a mapping of column names to values, or a sequence of row mappings all become a
:class:`Table`: named 1-D columns (numeric or categorical) for tabular data, or one
``(n, d)`` matrix for images and embeddings (samples of more than one dimension, flattened).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from lepton.data import Dataset
from lepton.errors import MonitorError, NotEnoughDataError, SchemaMismatchError

__all__ = ["ColumnKind", "Table", "as_table", "check_same_columns"]

ColumnKind = Literal["numeric", "categorical"]


@dataclass(frozen=True)
class Table:
    """Named columns of one sample of data.

    Attributes:
        names: Column names, in order.
        columns: One 1-D array per name: float64 (numeric) or object (categorical).
        kinds: ``"numeric"`` or ``"categorical"``, per column.
        matrix: For images and embeddings, the samples flattened to ``(n, d)`` (float64);
            ``columns`` then holds only extra columns (a target).
        sample_shape: Shape of one sample of ``matrix`` before flattening.
        rows: Number of rows.
    """

    names: tuple[str, ...]
    columns: tuple[np.ndarray, ...]
    kinds: tuple[ColumnKind, ...]
    matrix: np.ndarray | None
    sample_shape: tuple[int, ...]
    rows: int


def _is_pandas(data: Any) -> bool:
    return type(data).__module__.split(".")[0] == "pandas"


def _column(values: Any, name: str, categorical: bool) -> tuple[np.ndarray, ColumnKind]:
    array = np.asarray(values)
    if array.ndim != 1:
        raise MonitorError(
            f"column {name!r} has shape {array.shape}; each column must hold one value per row"
        )
    if categorical or array.dtype == object or array.dtype.kind in "USVb":
        return array.astype(str).astype(object), "categorical"
    try:
        return array.astype(np.float64), "numeric"
    except (TypeError, ValueError):
        return array.astype(str).astype(object), "categorical"


def _from_columns(
    named: Mapping[str, Any], categorical: Collection[str], rows: int | None = None
) -> tuple[list[str], list[np.ndarray], list[ColumnKind], int]:
    names, columns, kinds = [], [], []
    for name, values in named.items():
        column, kind = _column(values, str(name), str(name) in categorical)
        if rows is not None and len(column) != rows:
            raise MonitorError(
                f"column {name!r} has {len(column)} values but the others have {rows}; give "
                f"every column one value per row"
            )
        rows = len(column)
        names.append(str(name))
        columns.append(column)
        kinds.append(kind)
    return names, columns, kinds, rows or 0


def _array_table(array: np.ndarray, categorical: Collection[str]) -> Table:
    if array.ndim == 0:
        raise NotEnoughDataError("got a single value; pass one row per sample (a 1-D or 2-D array)")
    if array.ndim > 2:
        flat = array.reshape(len(array), -1).astype(np.float64)
        return Table((), (), (), flat, tuple(array.shape[1:]), len(array))
    if array.ndim == 1:
        array = array[:, None]
    named = {f"x{i}": array[:, i] for i in range(array.shape[1])}
    names, columns, kinds, _ = _from_columns(named, categorical)
    return Table(tuple(names), tuple(columns), tuple(kinds), None, (), len(array))


def as_table(
    data: Any, *, categorical: Collection[str] = (), targets: bool = False, what: str = "data"
) -> Table:
    """``data`` as a :class:`Table` (see the module docstring for what is accepted).

    Args:
        data: The sample.
        categorical: Names of columns to treat as categories even when numeric.
        targets: Add a lepton ``Dataset``'s targets as a column named ``target``
            (categorical for classification).
        what: ``"reference"`` or ``"current"``, for messages.

    Raises:
        NotEnoughDataError: No rows.
        MonitorError: A container that is not understood.
    """
    if isinstance(data, Table):
        table = data
    elif isinstance(data, Dataset):
        x = data.features.detach().cpu().numpy()
        if x.ndim > 2:
            table = Table((), (), (), x.reshape(len(x), -1).astype(np.float64), x.shape[1:], len(x))
        else:
            x2 = x[:, None] if x.ndim == 1 else x
            names = data.feature_names or [f"x{i}" for i in range(x2.shape[1])]
            n_, c_, k_, _ = _from_columns(
                {name: x2[:, i] for i, name in enumerate(names)}, categorical
            )
            table = Table(tuple(n_), tuple(c_), tuple(k_), None, (), len(x2))
        if targets and data.targets is not None:
            y = data.targets.detach().cpu().numpy()
            if y.ndim == 1:
                column, kind = _column(y, "target", data.task == "classification")
                table = Table(
                    (*table.names, "target"),
                    (*table.columns, column),
                    (*table.kinds, kind),
                    table.matrix,
                    table.sample_shape,
                    table.rows,
                )
    elif _is_pandas(data):
        frame = data.to_frame() if hasattr(data, "to_frame") else data
        named = {str(c): frame[c].to_numpy() for c in frame.columns}
        for c in frame.columns:
            if getattr(frame[c].dtype, "kind", "O") not in "iuf":  # strings, categories, bools
                named[str(c)] = frame[c].astype(str).to_numpy(dtype=object)
        names, columns, kinds, rows = _from_columns(named, categorical)
        table = Table(tuple(names), tuple(columns), tuple(kinds), None, (), len(frame))
    elif isinstance(data, Mapping):
        names, columns, kinds, rows = _from_columns(data, categorical)
        table = Table(tuple(names), tuple(columns), tuple(kinds), None, (), rows)
    elif isinstance(data, Sequence) and data and isinstance(data[0], Mapping):
        keys = list(data[0])
        for i, row in enumerate(data):
            if list(row) != keys and set(row) != set(keys):
                raise SchemaMismatchError(
                    f"row {i} of the {what} has columns {sorted(row)} but row 0 has "
                    f"{sorted(keys)}; give every row the same keys"
                )
        named = {k: [row[k] for row in data] for k in keys}
        names, columns, kinds, rows = _from_columns(named, categorical)
        table = Table(tuple(names), tuple(columns), tuple(kinds), None, (), rows)
    else:
        if hasattr(data, "detach") and hasattr(data, "cpu"):  # a torch tensor
            data = data.detach().cpu().numpy()
        try:
            array = np.asarray(data)
        except (TypeError, ValueError) as exc:
            raise MonitorError(
                f"cannot read the {what} ({type(data).__name__}): {exc}; pass a lepton "
                f"Dataset, a NumPy array, a DataFrame or a list of row dicts"
            ) from None
        if array.dtype == object and array.ndim > 1:
            array = array.astype(str).astype(object)
        table = _array_table(array, categorical)
    if table.rows == 0:
        raise NotEnoughDataError(
            f"the {what} has no rows; compare at least 2 rows against the reference"
        )
    return table


def check_same_columns(reference: Table, current: Table) -> None:
    """Raise :class:`SchemaMismatchError` unless both tables have the same layout."""
    if (reference.matrix is None) != (current.matrix is None):
        raise SchemaMismatchError(
            "the reference is "
            + ("images/embeddings" if reference.matrix is not None else "tabular")
            + " but the current data is "
            + ("images/embeddings" if current.matrix is not None else "tabular")
            + "; compare data of the same layout"
        )
    if (
        reference.matrix is not None
        and current.matrix is not None
        and reference.matrix.shape[1] != current.matrix.shape[1]
    ):
        raise SchemaMismatchError(
            f"reference samples have shape {reference.sample_shape} but current samples "
            f"have {current.sample_shape}; resize or embed both the same way"
        )
    if reference.names != current.names:
        missing = [n for n in reference.names if n not in current.names]
        extra = [n for n in current.names if n not in reference.names]
        detail = (
            f"missing from current: {missing}; not in reference: {extra}"
            if missing or extra
            else f"same names in another order: {list(current.names)}"
        )
        raise SchemaMismatchError(
            f"reference and current columns differ ({detail}); select the same columns in "
            f"the same order on both sides"
        )
