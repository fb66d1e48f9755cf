"""``/api/v1/models``: registered models and their versions: read, register (from a job or
an uploaded ONNX file), move between stages, alias, delete."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Body, Query
from pydantic import BaseModel, ConfigDict, Field

from lepton import registry
from lepton.errors import ConflictError, RegistryError, UnsafeFormatError
from lepton.platform._deps import Caller, P
from lepton.platform._http import Page, PageQuery, RecordId, allow
from lepton.platform._queries import deployments_of
from lepton.platform.web import _measure
from lepton.registry._card import importance_section

__all__ = ["router"]

router = APIRouter(prefix="/api/v1")


class ModelSummary(BaseModel):
    name: str
    versions: int
    latest: int | None
    description: str


class VersionView(BaseModel):
    name: str
    version: int
    ref: str
    state: str
    stage: str | None
    aliases: list[str]
    run_id: int | None
    created_at: float
    metrics: dict[str, float]
    manifest: dict[str, Any]


def _version_view(v: registry.ModelVersion) -> VersionView:
    return VersionView(
        name=v.name,
        version=v.version,
        ref=v.ref,
        state=v.state,
        stage=v.stage,
        aliases=list(v.aliases),
        run_id=v.run_id,
        created_at=v.created_at,
        metrics=v.metrics,
        manifest=v.manifest,
    )


@router.get("/models", tags=["models"])
@allow("viewer")
def models(p: P, paging: PageQuery) -> Page[ModelSummary]:
    """Registered models, by name."""
    found = [ModelSummary(**m) for m in registry.list_models(database=p.db)]  # type: ignore[arg-type]
    return Page.of((found[paging.offset : paging.offset + paging.limit], len(found)), paging)


@router.get("/models/{name}/versions", tags=["models"])
@allow("viewer")
def versions(p: P, name: str, paging: PageQuery) -> Page[VersionView]:
    """Ready versions of a model, newest first."""
    found = [_version_view(v) for v in registry.list_versions(name, database=p.db)]
    return Page.of((found[paging.offset : paging.offset + paging.limit], len(found)), paging)


@router.get("/models/{name}/versions/{version}", tags=["models"])
@allow("viewer")
def version(p: P, name: str, version: RecordId) -> VersionView:
    """One version: metrics, manifest (architecture, schema, preprocessing, lineage)."""
    return _version_view(registry.resolve(f"{name}:{version}", database=p.db))


@router.get("/models/{name}/versions/{version}/card", tags=["models"])
@allow("viewer")
def card(p: P, name: str, version: RecordId) -> dict[str, str]:
    """The version's model card (Markdown), with its global feature importances when
    they were measured after registration (as the dashboard shows it)."""
    found = registry.resolve(f"{name}:{version}", database=p.db)
    text = registry.model_card_text(found.ref, database=p.db)
    importance = _measure.stored(found, _measure.IMPORTANCE)
    if importance is not None:
        text = text.rstrip("\n") + "\n\n" + importance_section(importance)
    return {"markdown": text}


@router.get("/models/{name}/versions/{version}/figures", tags=["models"])
@allow("viewer")
def figures(p: P, name: str, version: RecordId) -> dict[str, Any]:
    """What was measured on the version after registration: ``benchmark`` (CPU latency
    at batch 1 and 64, test accuracy) and ``importance`` (global permutation importance),
    each ``null`` until measured from the dashboard; and ``registration``, the figures a
    compress step measured when it registered the version (``lineage.figures``)."""
    found = registry.resolve(f"{name}:{version}", database=p.db)
    return {
        "ref": found.ref,
        "benchmark": _measure.stored(found, _measure.BENCHMARK),
        "importance": _measure.stored(found, _measure.IMPORTANCE),
        "registration": (found.manifest.get("lineage") or {}).get("figures"),
    }


class FromJob(BaseModel):
    """The body of ``POST /api/v1/models/{name}/versions``."""

    model_config = ConfigDict(extra="forbid")
    job_id: int = Field(
        ge=1, le=2**31 - 1, description="A succeeded train job whose model to register."
    )


@router.post("/models/{name}/versions", tags=["models"], status_code=201)
@allow("editor")
def register_from_job(p: P, who: Caller, name: str, body: FromJob) -> VersionView:
    """Register the model a finished training job produced as the next version of ``name``."""
    registry._registry.validate_name(name)
    return _version_view(p.jobs.register_output(body.job_id, name, who.name))


@router.post("/models/{name}/versions/onnx", tags=["models"], status_code=201)
@allow("editor")
def upload_onnx(
    p: P,
    name: str,
    data: Annotated[bytes, Body(media_type="application/octet-stream")],
    classes: Annotated[list[str] | None, Query(max_length=10_000)] = None,
) -> VersionView:
    """Register an uploaded ONNX file (the raw body). Pickles and ``torch.save`` files are
    refused: they can run code when loaded."""
    registry._registry.validate_name(name)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "upload.onnx"
        path.write_bytes(data)
        try:
            registry.check_not_pickle(path)
        except UnsafeFormatError:
            raise UnsafeFormatError(
                "the uploaded file is a pickle or a torch.save archive (by its first bytes); "
                "Lepton never loads pickles because they can run code. Export the model to "
                "ONNX (torch.onnx.export) and upload that file"
            ) from None
        try:
            version = registry.register_onnx(path, name, classes=classes or None, database=p.db)
        except RegistryError as exc:  # its message may name our temporary file
            raise type(exc)(exc.message.replace(str(path), "the uploaded file")) from None
    return _version_view(version)


class StageChange(BaseModel):
    model_config = ConfigDict(extra="forbid")
    stage: str = Field(pattern=f"^({'|'.join(registry.STAGES)})$")


@router.put("/models/{name}/versions/{version}/stage", tags=["models"])
@allow("editor")
def set_stage(p: P, name: str, version: RecordId, body: StageChange) -> VersionView:
    """Move a version to a stage (``production`` moves off any other holder)."""
    return _version_view(registry.set_stage(f"{name}:{version}", body.stage, database=p.db))


@router.put("/models/{name}/aliases/{alias}", tags=["models"])
@allow("editor")
def set_alias(
    p: P,
    name: str,
    alias: Annotated[str, Field(max_length=64)],
    version: Annotated[int, Query(ge=0, le=2**31 - 1)],
) -> VersionView:
    """Point ``name@alias`` at a version (``?version=N``)."""
    return _version_view(registry.set_alias(f"{name}:{version}", alias, database=p.db))


@router.delete("/models/{name}/versions/{version}", tags=["models"])
@allow("admin")
def delete_version(p: P, name: str, version: RecordId) -> VersionView:
    """Delete a version and its files (admins only; not while a deployment uses it)."""
    serving = deployments_of(p.deployments, name, version)
    if serving:
        raise ConflictError(
            f"deployment {serving[0].name!r} uses {name}:{version}; delete the deployment first"
        )
    return _version_view(registry.delete_version(f"{name}:{version}", database=p.db))
