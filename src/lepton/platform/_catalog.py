"""The dataset catalog as the platform shows it (``/api/v1/datasets`` and the Datasets
page): each built-in dataset, whether its files are on this machine, and the registered
versions trained on it.

Example:
    >>> [d.name for d in dataset_views(db)]  # doctest: +SKIP
    ['mnist', 'fashion-mnist', ...]
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from lepton import data as lp_data
from lepton import registry
from lepton.data import DatasetInfo
from lepton.errors import DatasetNotFoundError
from lepton.platform._datasets import RegisteredView, registered_views
from lepton.storage import Database

__all__ = ["DatasetView", "dataset_view", "dataset_views"]


class DatasetView(BaseModel):
    """A catalog dataset, where it is, and what was trained on it."""

    name: str
    title: str
    task: str
    num_classes: int | None
    input_shape: list[int]
    splits: dict[str, int]
    source: str
    available: bool = Field(description="Whether its files are on this machine.")
    how_to_get: str
    models: list[str] = Field(default=[], description="Registered versions trained on it.")
    versions: int = Field(
        default=0, description="Registered versions (0 for a catalog dataset never registered)."
    )


def _view(info: DatasetInfo, models: list[str]) -> DatasetView:
    return DatasetView(
        name=info.name,
        title=info.title,
        task=info.task,
        num_classes=info.num_classes,
        input_shape=list(info.input_shape),
        splits=dict(info.splits),
        source=info.source,
        available=info.locate() is not None,
        how_to_get=info.how_to_get,
        models=models,
    )


def _registered(r: RegisteredView, models: list[str]) -> DatasetView:
    latest = r.latest
    schema = latest.schema_
    return DatasetView(
        name=r.name,
        title=f"registered dataset, {r.versions} version{'s' if r.versions != 1 else ''}",
        task=str(schema.get("task") or "none"),
        num_classes=len(schema["classes"]) if schema.get("classes") else None,
        input_shape=list((schema.get("features") or {}).get("shape") or []),
        splits={"all": latest.rows},
        source=f"registered: {latest.ref} ({latest.format}, by {latest.created_by})",
        available=True,
        how_to_get=f"lp.data.load({latest.ref!r})",
        models=models,
        versions=r.versions,
    )


def dataset_views(db: Database) -> list[DatasetView]:
    """Every built-in dataset, in catalog order, then the registered ones by name."""
    lineage = registry.versions_by_dataset(database=db)
    return [_view(info, lineage.get(info.name, [])) for info in lp_data.list_datasets()] + [
        _registered(r, lineage.get(r.name, [])) for r in registered_views(db)
    ]


def dataset_view(name: str, db: Database) -> DatasetView:
    """One dataset (``name`` as :func:`lepton.data.info` takes it).

    Raises:
        DatasetNotFoundError: No built-in dataset has that name.
    """
    try:
        info = lp_data.info(name)
    except DatasetNotFoundError:
        registered = [r for r in registered_views(db) if r.name == name]
        if not registered:
            raise
        return _registered(registered[0], registry.versions_by_dataset(database=db).get(name, []))
    return _view(info, registry.versions_by_dataset(database=db).get(info.name, []))
