"""Dashboard pages that change things: jobs, model stages and deployments.

Forms post plain fields (no JSON); each handler turns them into the same typed request
the REST API takes (:class:`~lepton.platform.jobs._scheduler.JobRequest`,
:class:`~lepton.platform.deployments._manager.DeploymentRequest`), so the rules are the API's. A
form that fails validation is shown again with the message and the values typed; a post
that succeeds redirects (303) to the page of what it made or changed.
"""

from __future__ import annotations

import json
import time
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Path, Query, Request, UploadFile
from fastapi.responses import Response
from pydantic import ValidationError

from lepton import data as lp_data
from lepton import models as lp_models
from lepton import registry
from lepton.errors import LeptonError, PlatformError
from lepton.platform._deps import Caller, P
from lepton.platform._http import RecordId, allow
from lepton.platform.deployments._manager import MAX_REPLICAS, DeploymentRequest
from lepton.platform.jobs._scheduler import STATES, JobRequest, JobState, TrainJob
from lepton.platform.web._charts import time_chart
from lepton.platform.web._render import PER_PAGE, FormText, optional_int, redirect, render

__all__ = ["router"]

router = APIRouter(include_in_schema=False)
MAX_UPLOAD = 8 * 1024 * 1024
DeploymentName = Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")]


def _problems(exc: ValidationError) -> str:
    """A validation error as one line per field, without pydantic's prefixes."""
    lines = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"] if p not in ("spec", "train"))
        message = str(error["msg"]).removeprefix("Value error, ")
        lines.append(f"{where}: {message}" if where else message)
    return "; ".join(lines)


def _number(value: str, name: str) -> float:
    try:
        return float(value.strip())
    except ValueError:
        raise PlatformError(f"{name} must be a number, got {value!r}") from None


# -- jobs ---------------------------------------------------------------------------------
def _jobs_page(
    p: Any,
    request: Request,
    *,
    state: str | None,
    offset: int,
    form: dict[str, str] | None = None,
    error: str = "",
) -> Response:
    jobs, total = p.jobs.list(state=state, offset=offset, limit=PER_PAGE)
    return render(
        request,
        "jobs.html",
        section="/jobs",
        status=422 if error else 200,
        jobs=jobs,
        total=total,
        state=state,
        states=STATES,
        offset=offset,
        per_page=PER_PAGE,
        zoo=lp_models.available_models(),
        datasets=[d.name for d in lp_data.list_datasets()],
        form=form
        or {
            "model": "mlp",
            "data": "mnist",
            "epochs": "1",
            "batch_size": "64",
            "lr": "0.001",
            "limit": "",
            "register": "",
            "cpus": "1",
            "memory_mb": "2048",
            "priority": "0",
        },
        error=error,
    )


@router.get("/jobs")
@allow("viewer")
def jobs(
    p: P,
    request: Request,
    state: JobState | None = None,
    offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
) -> Response:
    """Jobs, newest first, and the form that submits a training job."""
    return _jobs_page(p, request, state=state, offset=offset)


@router.post("/jobs")
@allow("editor")
def submit_job(
    p: P,
    who: Caller,
    request: Request,
    model: FormText,
    data: FormText,
    epochs: FormText = "1",
    batch_size: FormText = "64",
    lr: FormText = "0.001",
    limit: FormText = "",
    register_as: FormText = "",
    cpus: FormText = "1",
    memory_mb: FormText = "2048",
    priority: FormText = "0",
) -> Response:
    """Submit a training job from the form's fields (the same typed spec as the API)."""
    form = {"model": model, "data": data, "epochs": epochs, "batch_size": batch_size,
            "lr": lr, "limit": limit, "register": register_as, "cpus": cpus,
            "memory_mb": memory_mb, "priority": priority}  # fmt: skip
    try:
        spec = TrainJob.model_validate(
            {
                "model": model.strip(),
                "data": data.strip(),
                "epochs": optional_int(epochs, "epochs") or 1,
                "batch_size": optional_int(batch_size, "batch size") or 64,
                "lr": _number(lr, "learning rate"),
                "limit": optional_int(limit, "limit"),
                "register": register_as.strip() or None,
            }
        )
        slots = {
            "cpus": _number(cpus, "CPUs") if cpus.strip() else 1.0,
            "memory_mb": optional_int(memory_mb, "memory (MiB)") or 2048,
            "priority": optional_int(priority, "priority") or 0,
        }
        job = p.jobs.submit(JobRequest.model_validate({"spec": spec, **slots}), who.name)
    except ValidationError as exc:
        return _jobs_page(p, request, state=None, offset=0, form=form, error=_problems(exc))
    except LeptonError as exc:
        return _jobs_page(p, request, state=None, offset=0, form=form, error=exc.message)
    return redirect(f"/jobs/{job.id}")


@router.get("/jobs/{job_id}")
@allow("viewer")
def job(p: P, request: Request, job_id: RecordId) -> Response:
    """One job: state, spec, result or error, its live log, cancel and register."""
    found = p.jobs.get(job_id)
    registered = (found.result or {}).get("registered")
    suggested = found.spec.get("register") or f"{found.spec.get('data', 'model')}-" + str(
        found.spec.get("model", "model")
    )
    return render(
        request,
        "job.html",
        section="/jobs",
        job=found,
        registered=registered,
        suggested=str(suggested).replace("_", "-").lower(),
        result_json=json.dumps(found.result, indent=2) if found.result else "",
    )


@router.post("/jobs/{job_id}/cancel")
@allow("editor")
def cancel_job(p: P, who: Caller, job_id: RecordId) -> Response:
    """Cancel a queued or running job."""
    p.jobs.cancel(job_id, who.name)
    return redirect(f"/jobs/{job_id}")


@router.post("/jobs/{job_id}/register")
@allow("editor")
def register_job_output(p: P, who: Caller, job_id: RecordId, name: FormText) -> Response:
    """Register the model a succeeded train job made as the next version of ``name``."""
    from lepton.registry._registry import validate_name

    validate_name(name.strip())
    version = p.jobs.register_output(job_id, name.strip(), who.name)
    return redirect(f"/models/{version.name}/{version.version}")


# -- models (the one change the model pages offer) ----------------------------------------
@router.post("/models/{name}/{version}/stage")
@allow("editor")
def set_stage(
    p: P,
    name: Annotated[str, Path(max_length=100)],
    version: RecordId,
    stage: Annotated[str, Form(pattern="^(staging|production|archived)$")],
) -> Response:
    """Move a version to a stage."""
    registry.set_stage(f"{name}:{version}", stage, database=p.db)
    return redirect(f"/models/{name}/{version}")


# -- deployments --------------------------------------------------------------------------
def _deployments_page(
    p: Any, request: Request, *, form: dict[str, str] | None = None, error: str = ""
) -> Response:
    found, total = p.deployments.list(0, 500)
    refs = [
        f"{m['name']}:{m['latest']}" for m in registry.list_models(database=p.db) if m["latest"]
    ]
    return render(
        request,
        "deployments.html",
        section="/deployments",
        status=422 if error else 200,
        deployments=found,
        total=total,
        refs=refs,
        max_replicas=MAX_REPLICAS,
        form=form or {"name": "", "model": request.query_params.get("model", ""), "replicas": "1"},
        error=error,
    )


@router.get("/deployments")
@allow("viewer")
def deployments(p: P, request: Request) -> Response:
    """Deployments, and the form that deploys a registered version."""
    return _deployments_page(p, request)


@router.post("/deployments")
@allow("editor")
def create_deployment(
    p: P, who: Caller, request: Request, name: FormText, model: FormText, replicas: FormText = "1"
) -> Response:
    """Deploy a registered version (blocks until its process has started)."""
    form = {"name": name, "model": model, "replicas": replicas}
    try:
        body = DeploymentRequest.model_validate(
            {
                "name": name.strip(),
                "model": model.strip(),
                "replicas": optional_int(replicas, "replicas") or 1,
            }
        )
        p.deployments.create(body, who.name)
    except ValidationError as exc:
        return _deployments_page(p, request, form=form, error=_problems(exc))
    except LeptonError as exc:
        return _deployments_page(p, request, form=form, error=exc.message)
    return redirect(f"/deployments/{body.name}")


def _deployment_page(
    p: Any, request: Request, name: str, *, answer: dict[str, Any] | None = None,
    answer_error: str = "",
) -> Response:  # fmt: skip
    found = p.deployments.get(name)
    figures = p.deployments.metrics(name)
    now = time.time()
    series = figures.get("series") or []
    charts = [
        time_chart(
            [(s["t"], s["rps"]) for s in series if s.get("rps") is not None],
            title="Throughput", unit="req/s", now=now,
        ),
        time_chart(
            [(s["t"], s["latency_ms"]) for s in series if s.get("latency_ms") is not None],
            title="Mean latency", unit="ms", now=now, color="#dc2626",
        ),
    ]  # fmt: skip
    return render(
        request,
        "deployment.html",
        section="/deployments",
        status=422 if answer_error else 200,
        d=found,
        m=figures,
        charts=charts,
        log_tail=p.deployments.log_tail(name, 8 * 1024),
        max_replicas=MAX_REPLICAS,
        answer=answer,
        answer_error=answer_error,
    )


@router.get("/deployments/{name}")
@allow("viewer")
def deployment(p: P, request: Request, name: DeploymentName) -> Response:
    """One deployment: state, version, replicas, live throughput and latency, try it."""
    return _deployment_page(p, request, name)


@router.post("/deployments/{name}/scale")
@allow("editor")
def scale_deployment(p: P, who: Caller, name: DeploymentName, replicas: FormText) -> Response:
    """Change the number of replicas."""
    count = optional_int(replicas, "replicas")
    if count is None or not 1 <= count <= MAX_REPLICAS:
        raise PlatformError(f"replicas must be 1 to {MAX_REPLICAS}, got {replicas!r}")
    p.deployments.scale(name, count, who.name)
    return redirect(f"/deployments/{name}")


@router.post("/deployments/{name}/stop")
@allow("editor")
def stop_deployment(p: P, who: Caller, name: DeploymentName) -> Response:
    """Stop serving (requests in flight finish first)."""
    p.deployments.stop(name, who.name)
    return redirect(f"/deployments/{name}")


@router.post("/deployments/{name}/start")
@allow("editor")
def start_deployment(p: P, who: Caller, name: DeploymentName) -> Response:
    """Serve a stopped deployment again."""
    p.deployments.start(name, who.name)
    return redirect(f"/deployments/{name}")


@router.post("/deployments/{name}/delete")
@allow("editor")
def delete_deployment(p: P, who: Caller, name: DeploymentName) -> Response:
    """Stop a deployment and forget it."""
    p.deployments.delete(name, who.name)
    return redirect("/deployments")


@router.post("/deployments/{name}/predict")
@allow("viewer", audit=False)
async def try_deployment(
    p: P, request: Request, name: DeploymentName, image: Annotated[UploadFile, File()]
) -> Response:
    """Send an uploaded image to the deployment's ``/predict`` and show its answer."""
    data = await image.read(MAX_UPLOAD + 1)
    answer: dict[str, Any] | None = None
    problem = ""
    if not data:
        problem = "choose an image file (PNG or JPEG) first"
    elif len(data) > MAX_UPLOAD:
        problem = f"the image is over {MAX_UPLOAD // 2**20} MB; send a smaller one"
    else:
        kind = image.content_type if image.content_type in ("image/png", "image/jpeg") else None
        status, _, body = await p.deployments.predict(name, data, kind or "image/png")
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = None
        if status == 200 and isinstance(parsed, dict):
            answer = _top_classes(parsed)
        elif isinstance(parsed, dict) and isinstance(parsed.get("error"), dict):
            problem = f"{status}: {parsed['error'].get('message', 'the deployment failed')}"
        else:
            problem = f"the deployment answered {status} without a readable body"
    from starlette.concurrency import run_in_threadpool

    return await run_in_threadpool(
        _deployment_page, p, request, name, answer=answer, answer_error=problem
    )


def _top_classes(answer: dict[str, Any]) -> dict[str, Any]:
    """The answer, plus its three most likely classes for the page."""
    probabilities = answer.get("probabilities") or []
    ranked = sorted(enumerate(probabilities), key=lambda item: -float(item[1]))[:3]
    return {**answer, "top": [(i, float(prob)) for i, prob in ranked]}
