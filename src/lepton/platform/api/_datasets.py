"""``/api/v1/datasets``: the built-in catalog, whether each dataset is on this machine, and
the registered versions trained on it; registered (versioned) datasets: upload a table as
a new version, list a name's versions, read one (schema, profile, lineage), diff two."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Path, Query, UploadFile
from fastapi.responses import JSONResponse

from lepton._wire import error_body
from lepton.errors import InvalidRowsError
from lepton.platform._catalog import DatasetView, dataset_view, dataset_views
from lepton.platform._datasets import (
    NAME_PATTERN,
    DiffView,
    VersionView,
    diff_view,
    register_upload,
    version_view,
    version_views,
)
from lepton.platform._deps import Caller, P
from lepton.platform._http import Page, PageQuery, RecordId, allow

__all__ = ["router"]

router = APIRouter(prefix="/api/v1")
DatasetName = Annotated[str, Path(max_length=100)]


@router.get("/datasets", tags=["datasets"])
@allow("viewer")
def datasets(p: P, paging: PageQuery) -> Page[DatasetView]:
    """The built-in datasets, whether each is on this machine, and the models trained on it."""
    views = dataset_views(p.db)
    return Page.of((views[paging.offset : paging.offset + paging.limit], len(views)), paging)


@router.get("/datasets/{name}", tags=["datasets"])
@allow("viewer")
def dataset(p: P, name: DatasetName) -> DatasetView:
    """One dataset of the catalog."""
    return dataset_view(name, p.db)


@router.post(
    "/datasets",
    tags=["datasets"],
    status_code=201,
    response_model=VersionView,
    responses={422: {"description": "Bad rows, each with its line number (`bad_rows`)."}},
)
@allow("editor")
def upload(
    p: P,
    who: Caller,
    file: Annotated[UploadFile, File(description="A CSV, TSV or Parquet table.")],
    name: Annotated[str, Form(pattern=NAME_PATTERN, description="The dataset's name.")],
    target: Annotated[
        str | None, Form(max_length=200, description="The target column (default: the last).")
    ] = None,
    derived_from: Annotated[
        str | None, Form(max_length=200, description="The version it was made from, 'name@N'.")
    ] = None,
) -> Any:
    """Register an uploaded table as the next version of ``name`` (the same content returns
    its existing version, with 200). Every bad row is reported with its line number, and
    nothing is stored unless the whole file is good."""
    try:
        view, new = register_upload(
            p.db,
            file.file,
            file.filename or "",
            name,
            limit=p.config.max_upload_bytes,
            target=target,
            derived_from=derived_from,
            who=who.name,
        )
    except InvalidRowsError as exc:
        body = error_body(exc.code, exc.message, bad_rows=exc.problems[:1000])
        return JSONResponse(body, status_code=422)
    if not new:
        return JSONResponse(view.model_dump(mode="json", by_alias=True), status_code=200)
    return view


@router.get("/datasets/{name}/versions", tags=["datasets"])
@allow("viewer")
def versions(p: P, name: DatasetName, paging: PageQuery) -> Page[VersionView]:
    """The versions of a registered dataset, newest first."""
    views = version_views(p.db, name)
    return Page.of((views[paging.offset : paging.offset + paging.limit], len(views)), paging)


@router.get("/datasets/{name}/versions/{version}", tags=["datasets"])
@allow("viewer")
def version(p: P, name: DatasetName, version: RecordId) -> VersionView:
    """One version: its schema, profile (statistics) and lineage (what it was derived from,
    by which steps, and the runs and model versions that used it)."""
    return version_view(p.db, name, version)


@router.get("/datasets/{name}/diff", tags=["datasets"])
@allow("viewer")
def diff(
    p: P,
    name: DatasetName,
    a: Annotated[int, Query(ge=1, le=2**31 - 1, description="The first version.")],
    b: Annotated[int, Query(ge=1, le=2**31 - 1, description="The second version.")],
) -> DiffView:
    """Rows added and removed, schema changes and distribution changes from ``a`` to ``b``."""
    return diff_view(p.db, name, a, b)
