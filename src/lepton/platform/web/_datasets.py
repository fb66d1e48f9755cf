"""The Datasets page: the built-in catalog, whether each dataset is on this machine, and
the registered versions trained on it (the same views as ``/api/v1/datasets``)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from lepton.platform._catalog import dataset_views
from lepton.platform._deps import P
from lepton.platform._http import allow
from lepton.platform.web._render import render

__all__ = ["router"]

router = APIRouter(include_in_schema=False)


@router.get("/datasets")
@allow("viewer")
def datasets(p: P, request: Request) -> Response:
    """The catalog: what each dataset is, whether it is here, the models trained on it."""
    return render(request, "datasets.html", section="/datasets", datasets=dataset_views(p.db))
