"""Versioned datasets as the platform shows them (``/api/v1/datasets/...`` and the dataset
pages): the versions of a name with their schema, profile and lineage, the diff of two,
and uploads.

An upload is streamed to a temporary file (refused past the size limit), checked row by
row (every bad row reported with its line number), read, and only then registered; a
refused upload leaves no row and no artifact.

Example:
    >>> [v.ref for v in version_views(db, "iris-clean")]  # doctest: +SKIP
    ['iris-clean@1', 'iris-clean@2']
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, BinaryIO

from pydantic import BaseModel, ConfigDict, Field

from lepton import data as lp_data
from lepton.data._validate import TABLE_SUFFIXES, read_checked_table
from lepton.errors import DataError, DataFormatError, PayloadTooLargeError
from lepton.storage import Database, DatasetVersionStore

__all__ = [
    "NAME_PATTERN",
    "DiffView",
    "RegisteredView",
    "UseView",
    "VersionView",
    "diff_view",
    "register_upload",
    "registered_views",
    "version_view",
    "version_views",
]

NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,99}$"
_CHUNK = 1 << 20


class UseView(BaseModel):
    """A run or model version that used a version's content."""

    run_id: int | None
    model: str | None
    role: str
    at: float


class VersionView(BaseModel):
    """One version of a dataset: its schema, profile and lineage."""

    model_config = ConfigDict(populate_by_name=True)

    name: str
    version: int
    ref: str = Field(description="'name@version', what lp.data.load takes.")
    fingerprint: str
    format: str = Field(description="How it is stored: parquet (tables) or npz.")
    rows: int
    size: int = Field(description="Stored bytes.")
    schema_: dict[str, Any] = Field(alias="schema", description="Columns, shapes, dtypes.")
    stats: dict[str, Any] = Field(description="The profile (per-column statistics).")
    derived_from: str | None
    steps: list[Any] = Field(description="The steps that made it from derived_from.")
    used_by: list[UseView] = Field(description="Runs and model versions that used it.")
    created_at: float
    created_by: str


class RegisteredView(BaseModel):
    """A registered dataset and its latest version."""

    name: str
    versions: int
    latest: VersionView


class DiffView(BaseModel):
    """What changed from version ``a`` to version ``b``."""

    a: str
    b: str
    rows: dict[str, Any] = Field(description="added, removed, unchanged and examples.")
    schema_changes: list[str]
    distribution: dict[str, Any] | None = Field(description="lp.monitor.drift of b vs a.")
    notes: list[str]
    identical: bool


def _store(db: Database) -> DatasetVersionStore:
    return DatasetVersionStore(db)


def _view(version: lp_data.DatasetVersion) -> VersionView:
    raw = version.to_dict()
    raw["schema_"] = raw.pop("schema")
    raw["used_by"] = [UseView(**{k: u[k] for k in ("run_id", "model", "role", "at")})
                      for u in version.used_by]  # fmt: skip
    return VersionView.model_validate({k: v for k, v in raw.items() if k != "artifact"})


def version_views(db: Database, name: str) -> list[VersionView]:
    """Every version of ``name``, newest first.

    Raises:
        DatasetNotFoundError: No dataset of that name was registered.
    """
    return [_view(v) for v in reversed(lp_data.versions(name, store=_store(db)))]


def version_view(db: Database, name: str, version: int) -> VersionView:
    """Version ``version`` of ``name``."""
    return _view(lp_data.version(f"{name}@{version}", store=_store(db)))


def registered_views(db: Database) -> list[RegisteredView]:
    """Every registered dataset with its latest version, by name."""
    store = _store(db)
    return [
        RegisteredView(
            name=n["name"],
            versions=n["versions"],
            latest=_view(lp_data.version(f"{n['name']}@latest", store=store)),
        )
        for n in store.names()
    ]


def diff_view(db: Database, name: str, a: int, b: int) -> DiffView:
    """The diff of ``name@a`` and ``name@b`` (rows, schema, distributions)."""
    found = lp_data.diff(f"{name}@{a}", f"{name}@{b}", store=_store(db))
    return DiffView(
        a=found.a,
        b=found.b,
        rows=found.rows,
        schema_changes=found.schema,
        distribution=found.distribution,
        notes=found.notes,
        identical=found.identical,
    )


def _copy_limited(source: BinaryIO, dest: Path, limit: int) -> int:
    written = 0
    with open(dest, "wb") as out:
        while chunk := source.read(_CHUNK):
            written += len(chunk)
            if written > limit:
                raise PayloadTooLargeError(
                    f"the file is larger than this server's upload limit of {limit:,} bytes; "
                    f"upload a smaller file, or start the server with a larger limit"
                )
            out.write(chunk)
    return written


def register_upload(
    db: Database,
    source: BinaryIO,
    filename: str,
    name: str,
    *,
    limit: int,
    target: str | None = None,
    derived_from: str | None = None,
    who: str = "unknown",
) -> tuple[VersionView, bool]:
    """Check an uploaded CSV/TSV/Parquet table and register it as a version of ``name``.

    Returns:
        The version and whether it is new (the same content returns its existing version).

    Raises:
        PayloadTooLargeError: The file is over ``limit`` bytes.
        InvalidRowsError: Bad rows (each with its line number); nothing was stored.
        DataFormatError: Not a table Lepton can read.
    """
    suffix = Path(filename or "").suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise DataFormatError(
            f"upload a table: a {', '.join(TABLE_SUFFIXES)} file (got {filename!r}); images "
            f"and tensors are registered from Python with lp.data.register"
        )
    store = _store(db)
    with tempfile.TemporaryDirectory(prefix="lepton-upload-") as tmp:
        path = Path(tmp) / f"{name}{suffix}"
        if _copy_limited(source, path, limit) == 0:
            raise DataFormatError(f"{filename} is empty; upload a file with a header and rows")
        try:
            dataset = read_checked_table(path, target=target if target else -1, name=name)
        except DataError as exc:  # its message may name our temporary folder
            exc.message = exc.message.replace(str(path), filename)
            exc.args = (exc.message,)
            raise
        before = store.find(name, dataset.fingerprint())
        version = lp_data.register(
            dataset, name, derived_from=derived_from or None, store=store, created_by=who
        )
    return _view(version), before is None
