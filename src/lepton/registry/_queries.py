"""Lookups across the registry that a catalog or a dashboard needs: which ready versions
were trained on each dataset, which hold a stage, and which a run produced.

Each answers ``name:version`` references (or numbers), not loaded versions, so a page
listing every dataset or model costs one query.

Example:
    >>> versions_by_dataset()["mnist"]  # doctest: +SKIP
    ['mnist-convnet:1', 'mnist-convnet:2']
    >>> versions_in_stage("production")  # doctest: +SKIP
    {'mnist-convnet': [2]}
"""

from __future__ import annotations

from sqlalchemy import select

from lepton.errors import RegistryError
from lepton.registry._registry import STAGES
from lepton.storage import Database, open_database
from lepton.storage.schema import ModelVersionRow

__all__ = ["versions_by_dataset", "versions_in_stage", "versions_of_run"]

_READY = ModelVersionRow.state == "ready"


def versions_by_dataset(*, database: Database | None = None) -> dict[str, list[str]]:
    """Dataset name -> refs of the ready versions trained on it (from their manifests'
    lineage), oldest first."""
    db = database or open_database()
    out: dict[str, list[str]] = {}
    with db.session() as s:
        rows = s.execute(
            select(ModelVersionRow.model_name, ModelVersionRow.version, ModelVersionRow.manifest)
            .where(_READY)
            .order_by(ModelVersionRow.model_name, ModelVersionRow.version)
        )
        for name, version, manifest in rows:
            dataset = (manifest or {}).get("dataset") or {}
            if dataset.get("name"):
                out.setdefault(str(dataset["name"]), []).append(f"{name}:{version}")
    return out


def versions_in_stage(stage: str, *, database: Database | None = None) -> dict[str, list[int]]:
    """Model name -> its ready versions in ``stage``, newest first (``production`` has at
    most one per model: :func:`~lepton.registry.set_stage` moves the others off).

    Raises:
        RegistryError: ``stage`` is not one of :data:`~lepton.registry.STAGES`.
    """
    if stage not in STAGES:
        raise RegistryError(f"stage must be one of {', '.join(STAGES)}, got {stage!r}")
    db = database or open_database()
    out: dict[str, list[int]] = {}
    with db.session() as s:
        rows = s.execute(
            select(ModelVersionRow.model_name, ModelVersionRow.version)
            .where(_READY, ModelVersionRow.stage == stage)
            .order_by(ModelVersionRow.model_name, ModelVersionRow.version.desc())
        )
        for name, version in rows:
            out.setdefault(str(name), []).append(int(version))
    return out


def versions_of_run(run_id: int, *, database: Database | None = None) -> list[str]:
    """Refs of the ready versions registered from run ``run_id``, oldest first."""
    db = database or open_database()
    with db.session() as s:
        rows = s.execute(
            select(ModelVersionRow.model_name, ModelVersionRow.version)
            .where(_READY, ModelVersionRow.run_id == run_id)
            .order_by(ModelVersionRow.id)
        )
        return [f"{name}:{version}" for name, version in rows]
