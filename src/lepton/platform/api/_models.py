"""``/api/v1``: datasets, runs, registered models and their versions."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Body, Query
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from lepton import data as lp_data
from lepton import registry
from lepton.errors import ConflictError
from lepton.platform._deps import Caller, P
from lepton.platform._http import Page, PageQuery, RecordId, allow, public
from lepton.platform._state import Platform
from lepton.storage.schema import ModelVersionRow
from lepton.tracking import RunRecord, get_run, list_runs, metric_history
from lepton.tracking._run import last_metrics

__all__ = ["router"]

router = APIRouter(prefix="/api/v1")
NAME = r"^[a-z0-9][a-z0-9._-]{0,99}$"
ModelName = Annotated[str, Field(pattern=NAME)]


# -- health -------------------------------------------------------------------------------
class Health(BaseModel):
    status: str
    version: str
    uptime_s: float


@router.get("/health", tags=["server"])
@public
def health(p: P) -> Health:
    """Alive (no token needed)."""
    import time

    import lepton

    return Health(status="ok", version=lepton.__version__, uptime_s=time.time() - p.started_at)


# -- datasets -----------------------------------------------------------------------------
class DatasetView(BaseModel):
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


def _dataset_view(info: Any, models: list[str]) -> DatasetView:
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


def _lineage(p: Platform) -> dict[str, list[str]]:
    """Dataset name -> refs of the ready versions trained on it."""
    out: dict[str, list[str]] = {}
    with p.db.session() as s:
        for name, version, manifest in s.execute(
            select(
                ModelVersionRow.model_name, ModelVersionRow.version, ModelVersionRow.manifest
            ).where(ModelVersionRow.state == "ready")
        ):
            dataset = (manifest or {}).get("dataset") or {}
            if dataset.get("name"):
                out.setdefault(str(dataset["name"]), []).append(f"{name}:{version}")
    return out


@router.get("/datasets", tags=["datasets"])
@allow("viewer")
def datasets(p: P, paging: PageQuery) -> Page[DatasetView]:
    """The built-in datasets, whether each is on this machine, and the models trained on it."""
    lineage = _lineage(p)
    views = [_dataset_view(i, lineage.get(i.name, [])) for i in lp_data.list_datasets()]
    return Page.of((views[paging.offset : paging.offset + paging.limit], len(views)), paging)


@router.get("/datasets/{name}", tags=["datasets"])
@allow("viewer")
def dataset(p: P, name: Annotated[str, Field(max_length=100)]) -> DatasetView:
    """One dataset of the catalog."""
    info = lp_data.info(name)
    return _dataset_view(info, _lineage(p).get(info.name, []))


# -- runs ---------------------------------------------------------------------------------
@router.get("/runs", tags=["runs"])
@allow("viewer")
def runs(
    p: P,
    paging: PageQuery,
    state: Annotated[str | None, Query(pattern="^(running|finished|failed|killed)$")] = None,
) -> Page[RunRecord]:
    """Tracked runs, newest first."""
    from sqlalchemy import func

    from lepton.storage.schema import RunRow

    records = list_runs(state=state, limit=paging.limit, offset=paging.offset, database=p.db)
    with p.db.session() as s:
        query = select(func.count()).select_from(RunRow)
        if state is not None:
            query = query.where(RunRow.state == state)
        total = s.scalar(query) or 0
    return Page.of((records, total), paging)


@router.get("/runs/{run_id}", tags=["runs"])
@allow("viewer")
def run(p: P, run_id: RecordId) -> RunRecord:
    """One run with the last value of each metric."""
    return get_run(run_id, database=p.db)


@router.get("/runs/{run_id}/metrics", tags=["runs"])
@allow("viewer")
def run_metrics(p: P, run_id: RecordId) -> dict[str, list[tuple[int, float]]]:
    """Every metric's history: ``{key: [[step, value], ...]}``."""
    get_run(run_id, database=p.db)  # 404 for an unknown run
    keys = sorted(last_metrics(p.db, run_id))
    return {key: metric_history(run_id, key, database=p.db) for key in keys}


# -- models -------------------------------------------------------------------------------
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
    """The version's model card (Markdown)."""
    return {"markdown": registry.model_card_text(f"{name}:{version}", database=p.db)}


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
        registry.check_not_pickle(path)
        return _version_view(
            registry.register_onnx(path, name, classes=classes or None, database=p.db)
        )


class StageChange(BaseModel):
    model_config = ConfigDict(extra="forbid")
    stage: str = Field(pattern="^(staging|production|archived)$")


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
    for d in p.deployments.list(0, 10_000)[0]:
        if d.model_name == name and d.version == version:
            raise ConflictError(
                f"deployment {d.name!r} uses {name}:{version}; delete the deployment first"
            )
    return _version_view(registry.delete_version(f"{name}:{version}", database=p.db))
