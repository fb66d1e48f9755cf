"""Where versioned datasets live: a row per version in ``dataset_versions`` and its
content in the artifact store, plus the ``dataset_uses`` of each content fingerprint.

This is the storage half of :func:`lepton.data.register`; the data layer turns a
``Dataset`` into bytes, a schema and statistics, and this class keeps them. Records are
plain dicts, so the storage layer knows nothing of ``Dataset``.

A version is written content first (the artifact, content-addressed and atomic), row
second (one transaction): a crash in between leaves an unreferenced blob that ``gc``
removes, never a row without its content. Two writers of the same content under one name
meet on the ``(name, fingerprint)`` unique constraint and both get the one version.

Example:
    >>> store = DatasetVersionStore()  # doctest: +SKIP
    >>> [v["version"] for v in store.versions("iris-clean")]  # doctest: +SKIP
    [1, 2]
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError as RowConflict

from lepton.errors import DatasetNotFoundError, StorageError
from lepton.storage._artifacts import ArtifactStore
from lepton.storage._current import artifact_store
from lepton.storage._db import Database, open_database
from lepton.storage.schema import DatasetUseRow, DatasetVersionRow

__all__ = ["DatasetVersionStore", "record_dataset_use"]

_FIELDS = (
    "name", "version", "fingerprint", "format", "artifact", "size", "rows", "schema", "stats",
    "derived_from", "steps", "created_at", "created_by",
)  # fmt: skip


def _record(row: DatasetVersionRow) -> dict[str, Any]:
    return {f: getattr(row, f) for f in _FIELDS}


def record_dataset_use(
    db: Database,
    fingerprint: str,
    *,
    run_id: int | None = None,
    model: str | None = None,
    role: str = "train",
) -> None:
    """Record that a run (``run_id``) or a model version (``model``, ``"name:3"``) used the
    content ``fingerprint`` (lineage; shown with every version of that content)."""
    with db.session() as s:
        s.add(
            DatasetUseRow(
                fingerprint=fingerprint[:80], run_id=run_id, model=model, role=role[:32],
                at=time.time(),
            )
        )  # fmt: skip


class DatasetVersionStore:
    """Dataset versions in a metadata database and an artifact store.

    Args:
        database: The metadata database (default: :func:`open_database`, on first use).
        artifacts: The artifact store (default: :func:`artifact_store`, on each use).
    """

    def __init__(
        self, database: Database | None = None, artifacts: ArtifactStore | None = None
    ) -> None:
        self._db, self._artifacts = database, artifacts

    @property
    def db(self) -> Database:
        """The database, opened on first use."""
        if self._db is None:
            self._db = open_database()
        return self._db

    def _store(self) -> ArtifactStore:
        return self._artifacts or artifact_store()

    def find(self, name: str, fingerprint: str) -> dict[str, Any] | None:
        """The version of ``name`` with this content, if one was registered."""
        with self.db.session() as s:
            row = s.scalars(
                select(DatasetVersionRow).where(
                    DatasetVersionRow.name == name, DatasetVersionRow.fingerprint == fingerprint
                )
            ).first()
            return _record(row) if row is not None else None

    def add(
        self, record: Mapping[str, Any], payload: bytes, *, retries: int = 5
    ) -> tuple[dict[str, Any], bool]:
        """Store ``payload`` and its ``record`` (every field but ``version``, ``artifact``,
        ``size`` and ``created_at``) as the next version of ``record["name"]``.

        Returns:
            The stored record and whether it is new (``False``: that content was already a
            version of the name, and that version is returned).
        """
        name, fingerprint = str(record["name"]), str(record["fingerprint"])
        existing = self.find(name, fingerprint)
        if existing is not None:
            return existing, False
        key = f"datasets/{name}/{fingerprint.split(':')[-1]}.{record['format']}"
        info = self._store().put(key, payload)
        for _ in range(retries):
            try:
                with self.db.session() as s:
                    latest = s.scalar(
                        select(func.max(DatasetVersionRow.version)).where(
                            DatasetVersionRow.name == name
                        )
                    )
                    row = DatasetVersionRow(
                        **{k: record[k] for k in _FIELDS if k in record and k != "version"},
                        version=(latest or 0) + 1,
                        artifact=key,
                        size=info.size,
                        created_at=time.time(),
                    )
                    s.add(row)
                    s.flush()
                    return _record(row), True
            except RowConflict:
                existing = self.find(name, fingerprint)  # a concurrent writer of the same
                if existing is not None:
                    return existing, False
        raise StorageError(
            f"could not number a new version of dataset {name!r} after {retries} tries (other "
            f"writers kept taking the next number); try again"
        )

    def get(self, name: str, version: int | None = None) -> dict[str, Any]:
        """Version ``version`` of ``name`` (``None``: the latest).

        Raises:
            DatasetNotFoundError: No such dataset or version.
        """
        with self.db.session() as s:
            query = select(DatasetVersionRow).where(DatasetVersionRow.name == name)
            if version is not None:
                query = query.where(DatasetVersionRow.version == version)
            row = s.scalars(query.order_by(DatasetVersionRow.version.desc()).limit(1)).first()
            if row is not None:
                return _record(row)
            count = s.scalar(
                select(func.count())
                .select_from(DatasetVersionRow)
                .where(DatasetVersionRow.name == name)
            )
        if count:
            raise DatasetNotFoundError(
                f"dataset {name!r} has no version {version} (it has {count}); see "
                f"`lepton data versions {name}`"
            )
        raise DatasetNotFoundError(
            f"no registered dataset named {name!r}; register one with "
            f"lp.data.register(dataset, {name!r}) or `lepton data register PATH --name {name}`"
        )

    def versions(self, name: str) -> list[dict[str, Any]]:
        """Every version of ``name``, oldest first (empty for an unknown name)."""
        with self.db.session() as s:
            rows = s.scalars(
                select(DatasetVersionRow)
                .where(DatasetVersionRow.name == name)
                .order_by(DatasetVersionRow.version)
            )
            return [_record(r) for r in rows]

    def names(self) -> list[dict[str, Any]]:
        """Each registered dataset: ``name``, ``versions`` and its ``latest`` record."""
        with self.db.session() as s:
            counts = dict(
                s.execute(
                    select(DatasetVersionRow.name, func.count()).group_by(DatasetVersionRow.name)
                ).all()
            )
        return [
            {"name": n, "versions": int(c), "latest": self.get(n)}
            for n, c in sorted(counts.items())
        ]

    def read(self, record: Mapping[str, Any]) -> bytes:
        """The content of a version, checked against its hash by the artifact store."""
        return self._store().get(str(record["artifact"]))

    def uses(self, fingerprints: Sequence[str]) -> list[dict[str, Any]]:
        """The runs and model versions that used any of ``fingerprints``, oldest first."""
        with self.db.session() as s:
            rows = s.scalars(
                select(DatasetUseRow)
                .where(DatasetUseRow.fingerprint.in_(list(fingerprints)))
                .order_by(DatasetUseRow.at, DatasetUseRow.id)
            )
            return [
                {"fingerprint": r.fingerprint, "run_id": r.run_id, "model": r.model,
                 "role": r.role, "at": r.at}
                for r in rows
            ]  # fmt: skip

    def record_use(
        self,
        fingerprint: str,
        *,
        run_id: int | None = None,
        model: str | None = None,
        role: str = "train",
    ) -> None:
        """See :func:`record_dataset_use`."""
        record_dataset_use(self.db, fingerprint, run_id=run_id, model=model, role=role)
