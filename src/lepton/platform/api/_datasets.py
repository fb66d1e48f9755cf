"""``/api/v1/datasets``: the built-in catalog, whether each dataset is on this machine, and
the registered versions trained on it."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from lepton.platform._catalog import DatasetView, dataset_view, dataset_views
from lepton.platform._deps import P
from lepton.platform._http import Page, PageQuery, allow

__all__ = ["router"]

router = APIRouter(prefix="/api/v1")


@router.get("/datasets", tags=["datasets"])
@allow("viewer")
def datasets(p: P, paging: PageQuery) -> Page[DatasetView]:
    """The built-in datasets, whether each is on this machine, and the models trained on it."""
    views = dataset_views(p.db)
    return Page.of((views[paging.offset : paging.offset + paging.limit], len(views)), paging)


@router.get("/datasets/{name}", tags=["datasets"])
@allow("viewer")
def dataset(p: P, name: Annotated[str, Path(max_length=100)]) -> DatasetView:
    """One dataset of the catalog."""
    return dataset_view(name, p.db)
