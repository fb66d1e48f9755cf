"""``/api/v1/jobs``: submit a job (a typed spec, never a shell string), list, read, cancel,
and follow its log."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from lepton._wire import error_body
from lepton.errors import QuotaExceededError
from lepton.platform._deps import Caller, P
from lepton.platform._http import Page, PageQuery, RecordId, allow
from lepton.platform.jobs._specs import JobRequest, JobState, JobView

__all__ = ["router"]

router = APIRouter(prefix="/api/v1")


@router.post(
    "/jobs",
    tags=["jobs"],
    status_code=201,
    response_model=JobView,
    responses={429: {"description": "Too many jobs queued: wait (Retry-After) or cancel some."}},
)
@allow("editor")
def submit_job(p: P, who: Caller, body: JobRequest) -> JobView | JSONResponse:
    """Queue a job. The spec is typed (``kind``: train or evaluate); no command strings.
    When the caller, or everyone, has as many jobs queued as the server allows: 429."""
    try:
        return p.jobs.submit(body, who.name)
    except QuotaExceededError as exc:  # the shared handler gives Retry-After to ServingError only
        wait = str(max(1, round(exc.retry_after)))
        return JSONResponse(
            error_body(exc.code, exc.message), exc.status, headers={"Retry-After": wait}
        )


@router.get("/jobs", tags=["jobs"])
@allow("viewer")
def jobs(
    p: P,
    paging: PageQuery,
    state: JobState | None = None,
) -> Page[JobView]:
    """Jobs, newest first."""
    return Page.of(p.jobs.list(state=state, offset=paging.offset, limit=paging.limit), paging)


@router.get("/jobs/{job_id}", tags=["jobs"])
@allow("viewer")
def job(p: P, job_id: RecordId) -> JobView:
    """One job: its state, attempts, result or error."""
    return p.jobs.get(job_id)


@router.post("/jobs/{job_id}/cancel", tags=["jobs"])
@allow("editor")
def cancel_job(p: P, who: Caller, job_id: RecordId) -> JobView:
    """Cancel: a queued job at once; a running one is asked to stop, then killed."""
    return p.jobs.cancel(job_id, who.name)


class LogChunk(BaseModel):
    text: str
    next_offset: int = Field(description="Pass it as ?offset= to read what comes next.")
    finished: bool = Field(description="The job has ended: no more text will come.")


@router.get("/jobs/{job_id}/logs", tags=["jobs"])
@allow("viewer")
def job_logs(
    p: P,
    job_id: RecordId,
    offset: Annotated[int, Query(ge=0, le=2**40)] = 0,
    limit: Annotated[int, Query(ge=1, le=1 << 20)] = 65536,
) -> LogChunk:
    """The job's output from byte ``offset`` on (poll it for live logs)."""
    text, next_offset, finished = p.jobs.logs(job_id, offset=offset, limit=limit)
    return LogChunk(text=text, next_offset=next_offset, finished=finished)
