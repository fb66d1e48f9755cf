"""The Models pages: registered models and who holds production, a model's versions, one
version (metrics, lineage, deployments, model card with global importances, the Explain
panel), and moving a version to a stage. The side-by-side comparison of versions is in
:mod:`._compare`, the Explain panel's form in :mod:`._explain`."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Path, Request
from fastapi.responses import Response

from lepton import registry
from lepton.errors import LeptonError
from lepton.explain import METHODS
from lepton.platform._deps import P
from lepton.platform._http import RecordId, allow
from lepton.platform._queries import deployments_of, jobs_of_run
from lepton.platform.web import _measure
from lepton.platform.web._render import redirect, render
from lepton.registry._card import importance_section

__all__ = ["router"]

router = APIRouter(include_in_schema=False)
ModelName = Annotated[str, Path(max_length=100)]
Stage = Annotated[str, Form(pattern=f"^({'|'.join(registry.STAGES)})$")]


@router.get("/models")
@allow("viewer")
def models(p: P, request: Request) -> Response:
    """Registered models with their latest version and who holds production."""
    production = {
        name: versions[0]
        for name, versions in registry.versions_in_stage("production", database=p.db).items()
    }
    found = registry.list_models(database=p.db)
    return render(request, "models.html", section="/models", models=found, production=production)


@router.get("/models/{name}")
@allow("viewer")
def model(p: P, request: Request, name: ModelName) -> Response:
    """A model's versions: metrics, stage, aliases, lineage."""
    versions = registry.list_versions(name, database=p.db)
    keys = sorted({k for v in versions for k in v.metrics})
    return render(
        request, "model.html", section="/models", name=name, versions=versions, metric_keys=keys
    )


def version_page(p: P, request: Request, name: str, version: int, **explain: Any) -> Response:
    """One version's page; ``explain`` carries the Explain panel's answer or problem
    (``explained``, ``explain_error``, ``explain_form``) after its form was sent."""
    found = registry.resolve(f"{name}:{version}", database=p.db)
    try:
        card = registry.model_card_text(found.ref, database=p.db)
    except LeptonError as exc:
        card = f"(the model card could not be read: {exc.message})"
    importance = _measure.stored(found, _measure.IMPORTANCE)
    if importance is not None:  # measured after registration: the card gains its section
        card = card.rstrip("\n") + "\n\n" + importance_section(importance)
    running, failure = _measure.state(found.ref, _measure.IMPORTANCE)
    shape = found.manifest.get("input_schema", {}).get("shape") or []
    problem = explain.get("explain_error") or ""
    return render(
        request,
        "model_version.html",
        section="/models",
        status=422 if problem else 200,
        v=found,
        card=card,
        jobs=jobs_of_run(p.db, found.run_id),
        deployments=deployments_of(p.deployments, found.name, found.version),
        stages=registry.STAGES,
        importance=importance,
        importance_running=running,
        importance_failure=failure,
        tabular=len([d for d in shape if d not in (-1, 0) and isinstance(d, int)]) == 1,
        methods=METHODS,
        explained=explain.get("explained"),
        explain_error=problem,
        explain_form=explain.get("explain_form") or {},
    )


@router.get("/models/{name}/{version}")
@allow("viewer")
def model_version(p: P, request: Request, name: ModelName, version: RecordId) -> Response:
    """One version: metrics, lineage (dataset, run, job), deployments, its model card,
    global importances and the Explain panel."""
    return version_page(p, request, name, version)


@router.post("/models/{name}/{version}/stage")
@allow("editor")
def set_stage(p: P, name: ModelName, version: RecordId, stage: Stage) -> Response:
    """Move a version to a stage."""
    registry.set_stage(f"{name}:{version}", stage, database=p.db)
    return redirect(f"/models/{name}/{version}")
