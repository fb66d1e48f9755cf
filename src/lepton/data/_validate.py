"""Checking a CSV or Parquet table before anything is made of it: every bad row reported
with its line number, not only the first one (what an upload answers).

The schema is inferred: every column but the target must be numeric (missing values,
``""``, ``NA``, ``?``..., are allowed and become NaN); a column with no number at all is a
schema problem (encode it, drop it or make it the target); a value that is not a number
in a numeric column, a row with the wrong number of fields, or a missing target is a bad
row. :func:`read_checked_table` loads the table only when nothing is wrong.

Example:
    >>> ds = read_checked_table("iris.csv", target="species")  # doctest: +SKIP
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from lepton.data._dataset import Dataset
from lepton.data._loaders import _MISSING, from_csv, from_parquet
from lepton.errors import DataFormatError, InvalidRowsError

__all__ = ["TABLE_SUFFIXES", "check_rows", "read_checked_table"]

TABLE_SUFFIXES = (".csv", ".tsv", ".parquet", ".pq")
_SHOWN = 10


def _number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _csv_rows(path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle, delimiter=delimiter)
            rows = [(reader.line_num, row) for row in reader if row]
    except UnicodeDecodeError as exc:
        raise DataFormatError(
            f"{path.name} is not UTF-8 text (byte {exc.start}); save it as UTF-8 CSV"
        ) from None
    except csv.Error as exc:
        raise DataFormatError(f"{path.name} is not valid CSV ({exc})") from None
    if not rows:
        raise DataFormatError(f"{path.name} is empty; a header row and data rows are needed")
    return rows[0][1], rows[1:]


def _parquet_rows(path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DataFormatError(
            "reading Parquet needs pyarrow: pip install 'lepton[parquet]'"
        ) from None
    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises its own hierarchy
        raise DataFormatError(f"{path.name} is not a readable Parquet file ({exc})") from None
    names = list(table.column_names)
    columns = [table.column(n).to_pylist() for n in names]
    rows = [
        (i + 1, ["" if v is None else str(v) for v in values])
        for i, values in enumerate(zip(*columns, strict=True))
    ]
    return names, rows


def _target_index(names: list[str], target: str | int | None, where: str) -> int | None:
    if target is None:
        return None
    if isinstance(target, int):
        if not -len(names) <= target < len(names):
            raise DataFormatError(
                f"target column {target} is out of range: {where} has {len(names)} columns"
            )
        return target % len(names)
    if target not in names:
        raise DataFormatError(f"{where} has no column {target!r}; its columns are {names}")
    return names.index(target)


def check_rows(
    path: str | Path, *, target: str | int | None = -1
) -> tuple[list[dict[str, Any]], int, dict[str, str]]:
    """Every bad row of a CSV/TSV/Parquet table, the number of data rows, and the inferred
    kind of each column (``"numeric"`` or ``"target"``).

    Raises:
        DataFormatError: The file cannot be read at all, or a feature column holds no
            number (a schema problem, not a row problem).
    """
    p = Path(path)
    parquet = p.suffix.lower() in (".parquet", ".pq")
    names, rows = _parquet_rows(p) if parquet else _csv_rows(p)
    where = "line" if not parquet else "row"
    if len(set(names)) != len(names) or any(not n.strip() for n in names):
        raise DataFormatError(
            f"{p.name}: the header must name every column once, got {names}; rename the "
            f"empty or repeated columns"
        )
    t = _target_index(names, target, p.name)
    problems: list[dict[str, Any]] = []
    good = []
    for at, row in rows:
        if len(row) != len(names):
            wrong = f"has {len(row)} fields, expected {len(names)}"
            problems.append({where: at, "column": None, "value": None, "problem": wrong})
        else:
            good.append((at, row))
    kinds: dict[str, str] = {}
    for j, name in enumerate(names):
        if j == t:
            kinds[name] = "target"
            for at, row in good:
                if row[j].strip().lower() in _MISSING:
                    problems.append({where: at, "column": name, "value": row[j],
                                     "problem": "is missing (the target)"})  # fmt: skip
            continue
        values = [(at, row[j]) for at, row in good if row[j].strip().lower() not in _MISSING]
        bad = [(at, v) for at, v in values if not _number(v)]
        if values and len(bad) == len(values):
            raise DataFormatError(
                f"{p.name}: column {name!r} holds no numbers (first value {values[0][1]!r}); "
                f"encode it as numbers, drop it, or make it the target (target={name!r})"
            )
        kinds[name] = "numeric"
        problems += [
            {where: at, "column": name, "value": v, "problem": "is not a number"} for at, v in bad
        ]
    problems.sort(key=lambda item: (item[where], item["column"] or ""))
    return problems, len(rows), kinds


def read_checked_table(
    path: str | Path, *, target: str | int | None = -1, name: str | None = None
) -> Dataset:
    """Check a CSV/TSV/Parquet table (:func:`check_rows`), then load it.

    Raises:
        InvalidRowsError: Some rows are bad; ``problems`` lists each with its line number.
        DataFormatError: The file cannot be read, or its schema is not usable.
    """
    p = Path(path)
    if p.suffix.lower() not in TABLE_SUFFIXES:
        raise DataFormatError(
            f"{p.name}: tables are read from {', '.join(TABLE_SUFFIXES)} files, not "
            f"{p.suffix or 'a file without an extension'!r}"
        )
    problems, rows, _ = check_rows(p, target=target)
    if problems:
        key = "line" if "line" in problems[0] else "row"
        shown = "; ".join(
            f"{key} {x[key]}: " + (f"column {x['column']!r}: " if x["column"] else "")
            + (f"{x['value']!r} " if x["value"] else "") + x["problem"]
            for x in problems[:_SHOWN]
        )  # fmt: skip
        more = f" (and {len(problems) - _SHOWN} more)" if len(problems) > _SHOWN else ""
        raise InvalidRowsError(
            f"{p.name}: {len(problems)} bad rows of {rows}: {shown}{more}; fix them and upload "
            f"the file again (nothing was stored)",
            problems,
        )
    if p.suffix.lower() in (".parquet", ".pq"):
        return from_parquet(p, target=target, name=name)
    delimiter = "\t" if p.suffix.lower() == ".tsv" else ","
    return from_csv(p, target=target, delimiter=delimiter, name=name)
