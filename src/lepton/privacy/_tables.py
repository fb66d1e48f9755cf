"""A table the privacy functions are given, as the :class:`~lepton.data.Dataset` they read.

Besides a ``Dataset``, they take a pandas DataFrame or a mapping of column name to values
(``{"age": [...], "income": [...]}``); pandas is never imported here: a DataFrame is read
through its ``columns`` and ``[name]`` like any mapping. Every column becomes one float64
feature named after it, so the same table always gets the same fingerprint, and with it
the same budget in the ledger.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from lepton.data import Dataset
from lepton.errors import PrivacyError

__all__ = ["as_table"]


def as_table(data: Any) -> Dataset:
    """``data`` as a tabular ``Dataset`` (a ``Dataset`` is returned as it is).

    Raises:
        PrivacyError: Not a table, a non-numeric column, columns of different lengths, or
            no rows.
    """
    if isinstance(data, Dataset):
        return data
    if not (hasattr(data, "columns") and hasattr(data, "__getitem__")) and not isinstance(
        data, Mapping
    ):
        raise PrivacyError(
            f"cannot read a table from a {type(data).__name__}; pass a lepton.data.Dataset, "
            f'a pandas DataFrame or a dict of columns such as {{"age": [...]}}'
        )
    names = [str(c) for c in data.columns] if hasattr(data, "columns") else list(data)
    keys = list(data.columns) if hasattr(data, "columns") else names
    columns = []
    for name, key in zip(names, keys, strict=True):
        values = data[key]
        values = values.to_numpy() if hasattr(values, "to_numpy") else np.asarray(values)
        if values.ndim != 1 or values.dtype.kind not in "biuf":
            raise PrivacyError(
                f"column {name!r} holds {values.dtype} values; DP releases read numbers: "
                f"encode it first (e.g. categories as 0..K-1) or drop it"
            )
        columns.append(values.astype(np.float64))
    if not columns or len({len(c) for c in columns}) != 1 or not len(columns[0]):
        raise PrivacyError("the table needs at least one row and columns of equal length")
    return Dataset(np.stack(columns, axis=1), name="table", feature_names=names)
