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


def dataset_views(db: Database) -> list[DatasetView]:
    """Every built-in dataset, in catalog order."""
    lineage = registry.versions_by_dataset(database=db)
    return [_view(info, lineage.get(info.name, [])) for info in lp_data.list_datasets()]


def dataset_view(name: str, db: Database) -> DatasetView:
    """One dataset (``name`` as :func:`lepton.data.info` takes it).

    Raises:
        DatasetNotFoundError: No built-in dataset has that name.
    """
    info = lp_data.info(name)
    return _view(info, registry.versions_by_dataset(database=db).get(info.name, []))
