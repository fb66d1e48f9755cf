"""Turn what users pass as "ratings" into three aligned arrays, refusing what is broken.

Accepted: a :class:`lepton.data.Ratings`, a pandas DataFrame, a mapping of column name to
sequence (``{"user": [...], "item": [...], "rating": [...]}``), or rows of
``(user, item[, rating])``. pandas is never imported here: a DataFrame is read through
its ``columns`` and ``[name]`` like any mapping. Ids may be integers or strings.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from lepton.errors import RecommendError

__all__ = ["Columns", "Triples", "as_triples"]

#: Names tried, in order, for each role when the caller does not name the columns.
_ALIASES = {
    "user": ("user", "user_id", "userId", "userid", "uid"),
    "item": ("item", "item_id", "itemId", "movieId", "movie_id", "iid"),
    "rating": ("rating", "score", "value", "label"),
}


@dataclass(frozen=True)
class Columns:
    """Which columns hold the user, the item and the rating (``None``: guess by name)."""

    user: str | None = None
    item: str | None = None
    rating: str | None = None


@dataclass(frozen=True)
class Triples:
    """Aligned ``users`` and ``items`` (int64 or str arrays) and float32 ``ratings``."""

    users: np.ndarray
    items: np.ndarray
    ratings: np.ndarray

    def __len__(self) -> int:
        return len(self.ratings)


def _ids(values: Any, role: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise RecommendError(f"the {role} column must be one-dimensional, got shape {arr.shape}")
    if arr.dtype.kind in "iu":
        return arr.astype(np.int64)
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise RecommendError(
                f"{role} ids must be integers or strings; the {role} column holds "
                f"non-integral or missing numbers (drop those rows first)"
            )
        return arr.astype(np.int64)
    if any(v is None for v in arr.tolist()):
        raise RecommendError(f"the {role} column has missing ids (None); drop those rows")
    return arr.astype(str)


def _pick(available: Sequence[str], wanted: str | None, role: str, required: bool) -> str | None:
    if wanted is not None:
        if wanted not in available:
            raise RecommendError(
                f"no column {wanted!r} for the {role}; the table has columns {list(available)}"
            )
        return wanted
    found = next((a for a in _ALIASES[role] if a in available), None)
    if found is None and required:
        raise RecommendError(
            f"cannot tell which column holds the {role}: none of {list(_ALIASES[role])} is "
            f"among {list(available)}; pass {role}_col="
        )
    return found


def as_triples(data: Any, columns: Columns = Columns(), *, need_rating: bool = True) -> Triples:
    """Read ``data`` into :class:`Triples` (ratings default to 1.0 when ``need_rating`` is
    false and there is no rating column: implicit feedback)."""
    from lepton.data import Ratings

    users: Any
    items: Any
    ratings: Any
    if isinstance(data, Ratings):
        users, items, ratings = data.user, data.item, data.rating
    elif hasattr(data, "columns") or isinstance(data, Mapping):
        names = [str(c) for c in data.columns] if hasattr(data, "columns") else list(data)
        u = _pick(names, columns.user, "user", True)
        i = _pick(names, columns.item, "item", True)
        r = _pick(names, columns.rating, "rating", need_rating)
        assert u is not None
        assert i is not None
        col = (lambda n: data[n].to_numpy()) if hasattr(data, "to_numpy") else data.__getitem__
        users, items = col(u), col(i)
        ratings = col(r) if r is not None else np.ones(len(users), np.float32)
    elif isinstance(data, Sequence) or hasattr(data, "__iter__"):
        rows = [tuple(row) for row in data]
        widths = {len(row) for row in rows}
        if not rows or widths - {2, 3} or (need_rating and widths != {3}):
            raise RecommendError(
                "rows must be (user, item, rating) tuples"
                + ("" if need_rating else " or (user, item) pairs")
                + f"; got rows of lengths {sorted(widths) or '[] (no rows)'}"
            )
        users = [row[0] for row in rows]
        items = [row[1] for row in rows]
        ratings = [row[2] if len(row) == 3 else 1.0 for row in rows]
    else:
        raise RecommendError(
            f"cannot read ratings from a {type(data).__name__}; pass a lepton.data.Ratings, "
            f"a DataFrame, a dict of columns or (user, item, rating) rows"
        )
    try:
        values = np.asarray(ratings, dtype=np.float64)
    except (TypeError, ValueError):
        raise RecommendError("the rating column must hold numbers") from None
    if len(values) == 0:
        raise RecommendError("the ratings table is empty; pass at least one rating")
    bad = np.flatnonzero(~np.isfinite(values))
    if len(bad):
        raise RecommendError(
            f"{len(bad)} rating(s) are NaN or infinite (first at row {int(bad[0])}); drop or "
            f"fill them before fitting"
        )
    users_arr, items_arr = _ids(users, "user"), _ids(items, "item")
    if not len(users_arr) == len(items_arr) == len(values):
        raise RecommendError("the user, item and rating columns have different lengths")
    return Triples(users_arr, items_arr, values.astype(np.float32))
