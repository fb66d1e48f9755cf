"""The web dashboard: server-rendered pages over the platform, signed in by a cookie.

Read-only pages are here (overview, datasets, runs, models); the pages that change
things are in :mod:`~lepton.platform.web._ops` (jobs, stages, deployments) and
:mod:`~lepton.platform.web._users` (users and tokens, for admins).
:func:`install` mounts both, the login link and the static files on the app, and makes
errors on pages friendly: a visitor who is not signed in is sent to ``/login-help``
(the API keeps answering 401), and any other error is a page with its message, never
JSON or a traceback.

Every page reads the platform through the same objects the REST API uses; every form
is a plain ``method=post`` form, which browsers send with an ``Origin`` header that
:meth:`~lepton.platform._state.Platform.authenticate` checks against this server.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import APIRouter, FastAPI, Path, Query, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy import func, select
from starlette.exceptions import HTTPException as StarletteHTTPException

from lepton import data as lp_data
from lepton import registry
from lepton.errors import LeptonError, PlatformError, TrackingError, UnauthorizedError
from lepton.platform._deps import P
from lepton.platform._http import RecordId, allow, public, status_of
from lepton.platform.api._users import audit_entries
from lepton.platform.web._render import STATIC, render
from lepton.storage.schema import JobRow, ModelVersionRow, RunRow
from lepton.tracking import compare_runs, get_run, list_runs, metric_history
from lepton.tracking._plot import svg_string
from lepton.tracking._run import last_metrics

__all__ = ["install", "router"]

log = logging.getLogger("lepton.platform")
router = APIRouter(include_in_schema=False)
PER_PAGE = 50
_STATIC_FILES = {
    "lepton.css": "text/css",
    "lepton.js": "text/javascript",
    "favicon.svg": "image/svg+xml",
}
Offset = Annotated[int, Query(ge=0, le=10**9)]
ModelName = Annotated[str, Path(max_length=100)]


# -- signing in and static files ----------------------------------------------------------
@router.get("/login-help")
@public
def login_help(request: Request) -> Response:
    """How to sign in: the one-time link the server prints, or ``--login-link``."""
    return render(request, "login_help.html", reason="")


@router.get("/static/{name}")
@public
def static(name: Annotated[str, Path(max_length=40)]) -> Response:
    """Our stylesheet and script (a fixed list: no path from the URL reaches the disk)."""
    media_type = _STATIC_FILES.get(name)
    if media_type is None:
        raise StarletteHTTPException(404, f"no static file {name!r}")
    return Response(
        (STATIC / name).read_bytes(),
        media_type=media_type,
        headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"},
    )


# -- overview -----------------------------------------------------------------------------
@router.get("/")
@allow("viewer")
def overview(p: P, request: Request) -> Response:
    """Counts of everything, the latest jobs and, for admins, the latest audit entries."""
    datasets = lp_data.list_datasets()
    with p.db.session() as s:
        runs = s.scalar(select(func.count()).select_from(RunRow)) or 0
        versions = (
            s.scalar(
                select(func.count())
                .select_from(ModelVersionRow)
                .where(ModelVersionRow.state == "ready")
            )
            or 0
        )
        jobs_by_state = dict(
            s.execute(select(JobRow.state, func.count()).group_by(JobRow.state)).all()
        )
    audit = audit_entries(p.db, 0, 10)[0] if request.state.principal.may("admin") else []
    deployments, deployment_count = p.deployments.list(0, 500)
    recent_jobs, job_count = p.jobs.list(offset=0, limit=8)
    return render(
        request,
        "overview.html",
        section="/",
        datasets_available=sum(1 for d in datasets if d.locate() is not None),
        datasets_total=len(datasets),
        runs=runs,
        models=len(registry.list_models(database=p.db)),
        versions=versions,
        jobs_by_state=jobs_by_state,
        job_count=job_count,
        deployment_count=deployment_count,
        deployments_ready=sum(1 for d in deployments if d.state == "ready"),
        recent_jobs=recent_jobs,
        audit=audit,
    )


# -- datasets -----------------------------------------------------------------------------
@router.get("/datasets")
@allow("viewer")
def datasets(p: P, request: Request) -> Response:
    """The catalog: what each dataset is, whether it is here, the models trained on it."""
    from lepton.platform.api._models import _lineage

    lineage = _lineage(p)
    rows = [
        {"info": info, "available": info.locate() is not None, "models": lineage.get(info.name, [])}
        for info in lp_data.list_datasets()
    ]
    return render(request, "datasets.html", section="/datasets", datasets=rows)


# -- runs ---------------------------------------------------------------------------------
@router.get("/runs")
@allow("viewer")
def runs(p: P, request: Request, offset: Offset = 0) -> Response:
    """Tracked runs, newest first."""
    found = list_runs(limit=PER_PAGE, offset=offset, database=p.db)
    with p.db.session() as s:
        total = s.scalar(select(func.count()).select_from(RunRow)) or 0
    return render(
        request,
        "runs.html",
        section="/runs",
        runs=found,
        total=total,
        offset=offset,
        per_page=PER_PAGE,
    )


def _metric_groups(keys: list[str]) -> dict[str, list[str]]:
    """``train_loss`` and ``val_loss`` share the ``loss`` chart."""
    groups: dict[str, list[str]] = {}
    for key in sorted(keys):
        base = key
        for prefix in ("train_", "val_", "test_"):
            if key.startswith(prefix):
                base = key[len(prefix) :]
                break
        groups.setdefault(base, []).append(key)
    return groups


MAX_COMPARED = 8


@router.get("/runs/compare")  # before /runs/{run_id}, which would take "compare" for an id
@allow("viewer")
def compare(
    p: P,
    request: Request,
    run_ids: Annotated[list[int], Query(alias="id", max_length=MAX_COMPARED)] = [],  # noqa: B006
) -> Response:
    """Runs side by side: one chart per metric with a line per run, the parameters that
    differ, and the final metrics."""
    ids = list(dict.fromkeys(run_ids))
    if not 2 <= len(ids) <= MAX_COMPARED:
        raise PlatformError(
            f"pick 2 to {MAX_COMPARED} runs to compare (tick them on the Runs page), got {len(ids)}"
        )
    table = compare_runs(ids, database=p.db)
    charts = []
    for key in sorted({k for i in ids for k in last_metrics(p.db, i)}):
        series = [(f"#{i}", metric_history(i, key, database=p.db)) for i in ids]
        series = [(label, points) for label, points in series if points]
        try:
            charts.append(svg_string(series, title=key, y_label=key))
        except TrackingError:  # no run has a finite value of it
            continue
    return render(request, "compare.html", section="/runs", table=table, charts=charts)


@router.get("/runs/{run_id}")
@allow("viewer")
def run(p: P, request: Request, run_id: RecordId) -> Response:
    """One run: params, final metrics, a chart per metric, and what it produced."""
    record = get_run(run_id, database=p.db)
    charts = []
    for base, keys in _metric_groups(list(last_metrics(p.db, run_id))).items():
        series = [(key, metric_history(run_id, key, database=p.db)) for key in keys]
        try:
            charts.append(svg_string(series, title=base, y_label=base))
        except TrackingError:  # only non-finite values (a diverged run): nothing to draw
            continue
    with p.db.session() as s:
        jobs = list(s.scalars(select(JobRow.id).where(JobRow.run_id == run_id)))
        versions = [
            f"{name}:{version}"
            for name, version in s.execute(
                select(ModelVersionRow.model_name, ModelVersionRow.version).where(
                    ModelVersionRow.run_id == run_id, ModelVersionRow.state == "ready"
                )
            )
        ]
    return render(
        request,
        "run.html",
        section="/runs",
        run=record,
        charts=charts,
        jobs=jobs,
        versions=versions,
    )


# -- models -------------------------------------------------------------------------------
@router.get("/models")
@allow("viewer")
def models(p: P, request: Request) -> Response:
    """Registered models with their latest version and who holds production."""
    found = registry.list_models(database=p.db)
    production: dict[str, int] = {}
    with p.db.session() as s:
        for name, version in s.execute(
            select(ModelVersionRow.model_name, ModelVersionRow.version).where(
                ModelVersionRow.stage == "production", ModelVersionRow.state == "ready"
            )
        ):
            production[name] = version
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


@router.get("/models/{name}/{version}")
@allow("viewer")
def model_version(p: P, request: Request, name: ModelName, version: RecordId) -> Response:
    """One version: metrics, lineage (dataset, run, job), deployments, its model card."""
    found = registry.resolve(f"{name}:{version}", database=p.db)
    try:
        card = registry.model_card_text(found.ref, database=p.db)
    except LeptonError as exc:
        card = f"(the model card could not be read: {exc.message})"
    with p.db.session() as s:
        jobs = (
            list(s.scalars(select(JobRow.id).where(JobRow.run_id == found.run_id)))
            if found.run_id is not None
            else []
        )
    deployments = [
        d
        for d in p.deployments.list(0, 500)[0]
        if d.model_name == found.name and d.version == found.version
    ]
    return render(
        request,
        "model_version.html",
        section="/models",
        v=found,
        card=card,
        jobs=jobs,
        deployments=deployments,
    )


# -- installing the dashboard on the app --------------------------------------------------
Handler = Callable[[Request, Any], Response | Awaitable[Response]]


def _page_error(request: Request, exc: Exception) -> Response:
    """The page shown for ``exc`` on a dashboard route."""
    if isinstance(exc, UnauthorizedError):
        if request.scope.get("path") == "/login":  # a used or expired link: say so, 401
            return render(request, "login_help.html", reason="expired", status=401)
        return RedirectResponse("/login-help", status_code=303)
    if isinstance(exc, LeptonError):
        status, message = status_of(exc), exc.message
    elif isinstance(exc, StarletteHTTPException):
        status, message = exc.status_code, str(exc.detail)
    elif hasattr(exc, "errors"):  # a form or path value that failed validation
        status = 422
        message = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ())[1:]) or 'value'}: {e.get('msg', '')}"
            for e in exc.errors()
        )
    else:
        status, message = 500, "the server failed on this page; its log has the details"
    return render(
        request,
        "error.html",
        status=status,
        code=status,
        message=message,
        back=_same_site_path(request),
        section="",
    )


def _same_site_path(request: Request) -> str:
    """The path of the page that led here, if it is one of ours (for a "back" link)."""
    referer = urlsplit(request.headers.get("referer", ""))
    if referer.netloc != request.headers.get("host") or referer.scheme not in ("http", "https"):
        return ""
    return referer.path + (f"?{referer.query}" if referer.query else "")


def _wrap(original: Handler, pages: set[Any]) -> Handler:
    async def handle(request: Request, exc: Any) -> Response:
        endpoint = request.scope.get("endpoint")
        wants_html = "text/html" in request.headers.get("accept", "")
        is_api = request.url.path.startswith("/api/")
        if endpoint in pages or (endpoint is None and wants_html and not is_api):
            try:
                return _page_error(request, exc)
            except Exception:  # a page about an error must never fail itself
                log.exception("could not render the error page")
        answer = original(request, exc)
        return await answer if inspect.isawaitable(answer) else answer

    return handle


def install(app: FastAPI) -> None:
    """Mount the dashboard pages and its static files on ``app``.

    Call it after the app's error handlers are installed: it wraps them so that errors on
    dashboard pages (and on the login link) become pages, while the API keeps its JSON
    errors.
    """
    from lepton.platform.api import _users as _api_users
    from lepton.platform.web import _ops as _dashboard_ops
    from lepton.platform.web import _users as _dashboard_users

    app.include_router(router)
    app.include_router(_dashboard_ops.router)
    app.include_router(_dashboard_users.router)
    pages: set[Any] = {
        route.endpoint
        for r in (router, _dashboard_ops.router, _dashboard_users.router, _api_users.login_router)
        for route in r.routes
        if hasattr(route, "endpoint")
    }
    for exc_class, handler in list(app.exception_handlers.items()):
        if isinstance(exc_class, type):
            app.exception_handlers[exc_class] = _wrap(handler, pages)
