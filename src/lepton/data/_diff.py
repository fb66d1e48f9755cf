"""``diff(a, b)``: what changed between two dataset versions (or two datasets): rows added
and removed (by a digest of each row), schema changes, and distribution changes (the
comparison :mod:`lepton.data._versions` has in place: :func:`lepton.monitor.drift`).

Example:
    >>> print(lp.data.diff("iris-clean@1", "iris-clean@2"))  # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lepton.data._dataset import Dataset
from lepton.data._snapshot import compare_rows, compare_schema, schema_of
from lepton.data._versions import Compare, VersionStore, default_compare, load_version
from lepton.errors import DataError, LeptonError

__all__ = ["DatasetDiff", "diff"]


@dataclass(frozen=True)
class DatasetDiff:
    """What changed from version ``a`` to version ``b``.

    Attributes:
        a: The first side (``"name@N"`` or a dataset's name).
        b: The second side.
        rows: ``added``/``removed``/``unchanged`` row counts (by row digest) and the
            positions of the first added rows (in ``b``) and removed rows (in ``a``).
        schema: One sentence per schema change (columns, dtypes, shapes, classes).
        distribution: The drift report of ``b`` against ``a`` on their common columns
            (:func:`lepton.monitor.drift`), or ``None`` when it cannot be computed (the
            reason is in ``notes``).
        notes: Why a part is missing.
    """

    a: str
    b: str
    rows: dict[str, Any]
    schema: list[str]
    distribution: dict[str, Any] | None
    notes: list[str] = field(default_factory=list)

    @property
    def identical(self) -> bool:
        """Same rows (as a multiset) and same schema."""
        return not (self.rows["added"] or self.rows["removed"] or self.schema)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form."""
        return {**self.__dict__, "identical": self.identical}

    def __str__(self) -> str:
        r = self.rows
        lines = [
            f"{self.a} -> {self.b}: {r['rows_a']} -> {r['rows_b']} rows, +{r['added']} added, "
            f"-{r['removed']} removed, {r['unchanged']} unchanged",
        ]
        if r["added_rows"]:
            lines.append(f"  added rows (in {self.b}): {r['added_rows']}")
        if r["removed_rows"]:
            lines.append(f"  removed rows (in {self.a}): {r['removed_rows']}")
        lines += [f"  schema: {change}" for change in self.schema] or ["  schema: unchanged"]
        if self.distribution is not None:
            drifted = self.distribution.get("drifted_features") or []
            total = len(self.distribution.get("features") or [])
            lines.append(
                f"  distribution: {len(drifted)} of {total} features drifted"
                + (f" ({', '.join(map(str, drifted))})" if drifted else "")
            )
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def _side(value: str | Dataset, store: VersionStore | None) -> tuple[str, Dataset]:
    if isinstance(value, Dataset):
        return value.name, value
    return value, load_version(value, store=store)


def _common_columns(a: Dataset, b: Dataset) -> tuple[Dataset, Dataset]:
    """Both tables cut to the columns they share (in ``a``'s order), else as they are."""
    if a.features.dim() != 2 or b.features.dim() != 2:
        return a, b
    names_a = a.feature_names or [f"x{i}" for i in range(a.features.shape[1])]
    names_b = b.feature_names or [f"x{i}" for i in range(b.features.shape[1])]
    if names_a == names_b:
        return a, b
    common = [n for n in names_a if n in names_b]
    if not common:
        raise DataError("the two sides have no column in common")

    def cut(ds: Dataset, names: list[str]) -> Dataset:
        index = [names.index(n) for n in common]
        return ds._derive(ds.features[:, index], ds.targets, feature_names=common)

    return cut(a, names_a), cut(b, names_b)


def diff(
    a: str | Dataset,
    b: str | Dataset,
    *,
    store: VersionStore | None = None,
    compare: Compare | None = None,
) -> DatasetDiff:
    """Compare two versions (``"name@1"``, ``"name@2"``) or two datasets.

    Rows added and removed are found by a digest of each row (features and target);
    schema changes by comparing columns, shapes, dtypes and classes; distribution changes
    by :func:`lepton.monitor.drift` on the columns both sides have.

    Example:
        >>> print(lp.data.diff("iris-clean@1", "iris-clean@2"))  # doctest: +SKIP
        iris-clean@1 -> iris-clean@2: 150 -> 149 rows, +0 added, -1 removed, 149 unchanged
    """
    name_a, ds_a = _side(a, store)
    name_b, ds_b = _side(b, store)
    schema_a, schema_b = schema_of(ds_a), schema_of(ds_b)
    notes: list[str] = []
    try:
        cut_a, cut_b = _common_columns(ds_a, ds_b)
    except DataError:
        cut_a, cut_b = ds_a, ds_b
    same_layout = cut_a.input_shape == cut_b.input_shape
    if same_layout and cut_a.input_shape != ds_a.input_shape:
        notes.append(f"rows and distributions are compared on the {cut_a.input_shape[0]} "
                     f"columns both sides have")  # fmt: skip
    if same_layout:
        rows = compare_rows(cut_a, cut_b)
    else:
        notes.append("the samples have different shapes, so every row counts as changed")
        rows = {
            "rows_a": len(ds_a), "rows_b": len(ds_b), "added": len(ds_b), "removed": len(ds_a),
            "unchanged": 0, "added_rows": [], "removed_rows": [],
        }  # fmt: skip
    distribution: dict[str, Any] | None = None
    comparing = compare or default_compare()
    if comparing is None:
        notes.append("no distribution test is in place (import lepton puts lp.monitor.drift)")
    elif same_layout:
        try:
            distribution = dict(comparing(cut_a, cut_b))
        except LeptonError as exc:  # too few rows, say: a note, not a failure
            notes.append(f"distributions not compared: {exc.message}")
    return DatasetDiff(
        name_a, name_b, rows, compare_schema(schema_a, schema_b), distribution, notes
    )
