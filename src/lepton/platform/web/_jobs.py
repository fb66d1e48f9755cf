"""The Jobs pages: jobs (paged, by state), the form that submits a training job and the
one that submits any kind from its JSON spec, one job with its live log, cancelling it,
and registering the model it made.

The form posts plain fields; the handler turns them into the same typed
:class:`~lepton.platform.jobs._specs.JobRequest` the REST API takes, so the rules and the
defaults are the spec's: a field left empty is left out, and the spec's default applies.
A form that fails validation is shown again with the message and the values typed.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from pydantic import ValidationError

from lepton import models as lp_models
from lepton.errors import LeptonError
from lepton.platform._deps import Caller, P
from lepton.platform._http import RecordId, allow
from lepton.platform._state import Platform
from lepton.platform.jobs._specs import STATES, JobRequest, JobState, TrainJob
from lepton.platform.web._render import (
    PER_PAGE,
    FormText,
    form_problems,
    number,
    optional_int,
    redirect,
    render,
)
from lepton.registry._registry import validate_name
from lepton.train.recipe import trainable_datasets

__all__ = ["router"]

router = APIRouter(include_in_schema=False)


def _defaults() -> dict[str, str]:
    """The form's first values: the spec's own defaults (the training recipe's, the same
    as `lepton train`'s)."""
    spec, slots = TrainJob.model_fields, JobRequest.model_fields
    return {
        "model": str(spec["model"].default),
        "data": str(spec["data"].default),
        "epochs": str(spec["epochs"].default),
        "batch_size": str(spec["batch_size"].default),
        "lr": str(spec["lr"].default),
        "limit": "",
        "register": "",
        "cpus": f"{slots['cpus'].default:g}",
        "memory_mb": str(slots["memory_mb"].default),
        "priority": str(slots["priority"].default),
        "spec": "",
    }


def _jobs_page(
    p: Platform,
    request: Request,
    *,
    state: str | None,
    offset: int,
    form: dict[str, str] | None = None,
    error: str = "",
    spec_error: str = "",
) -> Response:
    jobs, total = p.jobs.list(state=state, offset=offset, limit=PER_PAGE)
    return render(
        request,
        "jobs.html",
        section="/jobs",
        status=422 if error or spec_error else 200,
        jobs=jobs,
        total=total,
        state=state,
        states=STATES,
        offset=offset,
        per_page=PER_PAGE,
        zoo=lp_models.available_models(),
        # ratings tables train recommenders (their own form, /recommend), not zoo models
        datasets=trainable_datasets(),
        form=form or _defaults(),
        error=error,
        spec_error=spec_error,
        spec_example=_SPEC_EXAMPLE,
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


def _given(fields: dict[str, Any]) -> dict[str, Any]:
    """The fields the form filled in (an empty one takes the spec's default)."""
    return {k: v for k, v in fields.items() if v is not None}


def _slots(cpus: str, memory_mb: str, priority: str) -> dict[str, Any]:
    """What the job asks of the scheduler, from the form (empty: the request's default)."""
    return _given(
        {
            "cpus": number(cpus, "CPUs") if cpus.strip() else None,
            "memory_mb": optional_int(memory_mb, "memory (MiB)"),
            "priority": optional_int(priority, "priority"),
        }
    )


@router.post("/jobs")
@allow("editor")
def submit_job(
    p: P,
    who: Caller,
    request: Request,
    model: FormText,
    data: FormText,
    epochs: FormText = "",
    batch_size: FormText = "",
    lr: FormText = "",
    limit: FormText = "",
    register_as: FormText = "",
    cpus: FormText = "",
    memory_mb: FormText = "",
    priority: FormText = "",
) -> Response:
    """Submit a training job from the form's fields (the same typed spec as the API)."""
    form = {"model": model, "data": data, "epochs": epochs, "batch_size": batch_size,
            "lr": lr, "limit": limit, "register": register_as, "cpus": cpus,
            "memory_mb": memory_mb, "priority": priority}  # fmt: skip
    try:
        spec = TrainJob.model_validate(
            _given(
                {
                    "model": model.strip(),
                    "data": data.strip(),
                    "epochs": optional_int(epochs, "epochs"),
                    "batch_size": optional_int(batch_size, "batch size"),
                    "lr": number(lr, "learning rate") if lr.strip() else None,
                    "limit": optional_int(limit, "limit"),
                    "register": register_as.strip() or None,
                }
            )
        )
        slots = _slots(cpus, memory_mb, priority)
        job = p.jobs.submit(JobRequest.model_validate({"spec": spec, **slots}), who.name)
    except ValidationError as exc:
        return _jobs_page(p, request, state=None, offset=0, form=form, error=form_problems(exc))
    except LeptonError as exc:
        return _jobs_page(p, request, state=None, offset=0, form=form, error=exc.message)
    return redirect(f"/jobs/{job.id}")


_SPEC_EXAMPLE = '{"kind": "compress", "model": "mnist-convnet@production", "quantize": "static"}'


@router.post("/jobs/spec")
@allow("editor")
def submit_spec(
    p: P, who: Caller, request: Request, spec: FormText, cpus: FormText = "",
    memory_mb: FormText = "", priority: FormText = "",
) -> Response:  # fmt: skip
    """Submit a job of any kind (train, evaluate, tune, compress, ...) from its JSON spec,
    checked against the same typed spec as ``POST /api/v1/jobs``."""
    form = {**_defaults(), "spec": spec, "cpus": cpus, "memory_mb": memory_mb,
            "priority": priority}  # fmt: skip
    try:
        body = json.loads(spec)
    except json.JSONDecodeError as exc:
        return _jobs_page(p, request, state=None, offset=0, form=form,
                          spec_error=f"the spec is not JSON: {exc}")  # fmt: skip
    try:
        slots = _slots(cpus, memory_mb, priority)
        job = p.jobs.submit(JobRequest.model_validate({"spec": body, **slots}), who.name)
    except ValidationError as exc:
        return _jobs_page(p, request, state=None, offset=0, form=form,
                          spec_error=form_problems(exc))  # fmt: skip
    except LeptonError as exc:
        return _jobs_page(p, request, state=None, offset=0, form=form, spec_error=exc.message)
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
    validate_name(name.strip())
    version = p.jobs.register_output(job_id, name.strip(), who.name)
    return redirect(f"/models/{version.name}/{version.version}")
