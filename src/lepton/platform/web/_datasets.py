"""The Datasets pages: the built-in catalog (whether each dataset is on this machine, the
registered versions trained on it), the registered datasets with an upload form, a
dataset's page (its versions, the profile and lineage of one) and the diff of two
versions (the same views as ``/api/v1/datasets``)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, File, Path, Query, Request, UploadFile
from fastapi.responses import Response

from lepton.errors import InvalidRowsError, LeptonError
from lepton.platform._catalog import dataset_views
from lepton.platform._datasets import (
    diff_view,
    register_upload,
    registered_views,
    version_views,
)
from lepton.platform._deps import Caller, P
from lepton.platform._http import allow
from lepton.platform._state import Platform
from lepton.platform.web._render import FormText, redirect, render

__all__ = ["router"]

router = APIRouter(include_in_schema=False)
DatasetName = Annotated[str, Path(max_length=100)]


def _datasets_page(p: Platform, request: Request, *, status: int = 200, **upload: Any) -> Response:
    form = {"name": "", "target": "", "derived_from": "", **upload.pop("form", {})}
    return render(
        request,
        "datasets.html",
        section="/datasets",
        status=status,
        datasets=[d for d in dataset_views(p.db) if not d.versions],  # the catalog's
        registered=registered_views(p.db),
        form=form,
        error=upload.get("error", ""),
        bad_rows=upload.get("bad_rows", []),
    )


@router.get("/datasets")
@allow("viewer")
def datasets(p: P, request: Request) -> Response:
    """The catalog and the registered datasets (with an upload form for editors)."""
    return _datasets_page(p, request)


@router.post("/datasets")
@allow("editor")
def upload(
    p: P,
    who: Caller,
    request: Request,
    file: Annotated[UploadFile, File()],
    name: FormText,
    target: FormText = "",
    derived_from: FormText = "",
) -> Response:
    """Register an uploaded CSV/Parquet table; bad rows are listed with their lines."""
    form = {"name": name, "target": target, "derived_from": derived_from}
    try:
        view, _ = register_upload(
            p.db,
            file.file,
            file.filename or "",
            name.strip(),
            limit=p.config.max_upload_bytes,
            target=target.strip() or None,
            derived_from=derived_from.strip() or None,
            who=who.name,
        )
    except InvalidRowsError as exc:
        return _datasets_page(
            p, request, status=422, form=form, error=exc.message, bad_rows=exc.problems[:100]
        )
    except LeptonError as exc:
        return _datasets_page(p, request, status=422, form=form, error=exc.message)
    return redirect(f"/datasets/{view.name}?version={view.version}")


@router.get("/datasets/{name}")
@allow("viewer")
def dataset(
    p: P,
    request: Request,
    name: DatasetName,
    version: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
) -> Response:
    """A registered dataset: its versions, and one version's profile and lineage."""
    versions = version_views(p.db, name)
    shown = next((v for v in versions if v.version == version), None) or versions[0]
    return render(
        request,
        "dataset.html",
        section="/datasets",
        name=name,
        versions=versions,
        v=shown,
        features=(shown.stats.get("features") or {}),
        class_counts=(shown.stats.get("class_counts") or {}),
    )


@router.get("/datasets/{name}/diff")
@allow("viewer")
def diff(
    p: P,
    request: Request,
    name: DatasetName,
    a: Annotated[int, Query(ge=1, le=2**31 - 1)],
    b: Annotated[int, Query(ge=1, le=2**31 - 1)],
) -> Response:
    """What changed between two versions: rows, schema, distributions."""
    return render(
        request,
        "dataset_diff.html",
        section="/datasets",
        name=name,
        d=diff_view(p.db, name, a, b),
        versions=[v.version for v in version_views(p.db, name)],
    )
