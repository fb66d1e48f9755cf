"""The Deployments pages: deployments and the form that deploys a registered version; one
deployment with its live throughput and latency, its drift over time, its log, scaling,
its autoscaling policy and what the autoscaler sees now, releasing another version (at
once, or as a canary on a share of the traffic, then promoting or aborting it), stopping,
starting, deleting, and trying it with an uploaded image.

Forms post plain fields; the handlers build the same typed
:class:`~lepton.platform.deployments._specs.DeploymentRequest` the REST API takes, and the
name's pattern and the replica limit come from that module, so the rules are the API's.
"""

from __future__ import annotations

import json
import math
import time
from typing import Annotated, Any

from fastapi import APIRouter, File, Path, Request, UploadFile
from fastapi.responses import Response
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from lepton import registry
from lepton.errors import LeptonError, NoAutoscalePolicyError, NotFoundError, PlatformError
from lepton.platform._deps import Caller, P
from lepton.platform._http import allow
from lepton.platform._state import Platform
from lepton.platform.deployments._autoscale import (
    AutoscalePolicy,
    AutoscaleSettings,
    AutoscaleStatus,
)
from lepton.platform.deployments._canary import CanaryRequest, ReleaseRequest
from lepton.platform.deployments._drift_watch import DriftSummary
from lepton.platform.deployments._specs import MAX_REPLICAS, NAME, DeploymentRequest
from lepton.platform.web._charts import time_chart
from lepton.platform.web._render import FormText, form_problems, optional_int, redirect, render
from lepton.serve._by_model import SERVICES, architecture_name

__all__ = ["router"]

router = APIRouter(include_in_schema=False)
MAX_UPLOAD = 8 * 1024 * 1024
DeploymentName = Annotated[str, Path(pattern=f"^{NAME.pattern}$")]
_AUTOSCALE_FIELDS = tuple(AutoscaleSettings.model_fields)  # the form's fields, the API's
_AUTOSCALE_DEFAULTS = {  # what an empty form shows: the policy's own defaults
    k: f.default for k, f in AutoscaleSettings.model_fields.items() if not f.is_required()
}


def _deployments_page(
    p: Platform, request: Request, *, form: dict[str, str] | None = None, error: str = ""
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
        return _deployments_page(p, request, form=form, error=form_problems(exc))
    except LeptonError as exc:
        return _deployments_page(p, request, form=form, error=exc.message)
    return redirect(f"/deployments/{body.name}")


def _drift_chart(history: list[DriftSummary], now: float) -> str | None:
    """The share of features drifted (%) of each stored report over time, on an axis of
    whole minutes that spans them all; ``None`` before a report with a verdict."""
    points = [(r.at, 100 * r.share_drifted) for r in history if r.share_drifted is not None]
    if not points:
        return None
    span = max(300.0, 300 * math.ceil((now - min(t for t, _ in points)) / 300))
    return time_chart(sorted(points), title="Features drifted", unit="%", now=now,
                      window_s=span, color="#d97706")  # fmt: skip


def _as_text(value: Any) -> str:
    """A policy's value as its form field shows it (``10``, not ``10.0``)."""
    if value is None:
        return ""
    return f"{value:g}" if isinstance(value, float) else str(value)


def _deployment_page(
    p: Platform, request: Request, name: str, *, answer: dict[str, Any] | None = None,
    answer_error: str = "", autoscale_form: dict[str, str] | None = None,
    autoscale_error: str = "", release_form: dict[str, str] | None = None,
    release_error: str = "",
) -> Response:  # fmt: skip
    found = p.deployments.get(name)
    try:  # the versions it may release, newest first
        versions = [v.ref for v in registry.list_versions(found.model_name, database=p.db)]
    except LeptonError:  # the model was deleted since
        versions = []
    try:
        policy: AutoscaleStatus | None = p.deployments.aiops.autoscaler.status(name)
    except NoAutoscalePolicyError:
        policy = None
    if autoscale_form is None:  # the policy's values, or the defaults to start from
        shown = policy.model_dump() if policy is not None else _AUTOSCALE_DEFAULTS
        autoscale_form = {k: _as_text(shown.get(k)) for k in _AUTOSCALE_FIELDS}
    try:
        # served by a service of its own: its route and page instead of the image upload
        own = SERVICES.get(architecture_name(p.deployments.manifest(found.ref)) or "")
    except LeptonError:  # the version was deleted since: the plain form, which says so
        own = None
    figures = p.deployments.metrics(name)
    now = time.time()
    history = p.deployments.aiops.drift.history(name)
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
        status=422 if answer_error or autoscale_error or release_error else 200,
        d=found,
        autoscale=policy,
        autoscale_form=autoscale_form,
        autoscale_error=autoscale_error,
        m=figures,
        charts=charts,
        log_tail=p.deployments.log_tail(name, 8 * 1024),
        max_replicas=MAX_REPLICAS,
        answer=answer,
        answer_error=answer_error,
        drift=p.deployments.aiops.drift.report(name),
        drift_history=history[:10],
        drift_chart=_drift_chart(history, now),
        anomalies=p.deployments.aiops.anomalies(name)[-10:][::-1],
        alerts=p.deployments.aiops.store.alerts(deployment=name, limit=10),
        own=own,
        canary=p.deployments.canaries.of(name),
        canary_of=p.deployments.canaries.parent_of(name),
        versions=[v for v in versions if v != found.ref],
        release_form=release_form or {"model": "", "share": "", "promote_after_s": ""},
        release_error=release_error,
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


@router.post("/deployments/{name}/autoscale")
@allow("editor")
def set_autoscale(
    p: P, request: Request, name: DeploymentName, metric: FormText = "", high: FormText = "",
    low: FormText = "", min_replicas: FormText = "", max_replicas: FormText = "",
    up_for_s: FormText = "", down_for_s: FormText = "", cooldown_s: FormText = "",
    window_s: FormText = "",
) -> Response:  # fmt: skip
    """Set (or replace) the deployment's autoscaling policy; empty fields take the
    policy's defaults, as in ``PUT /api/v1/deployments/NAME/autoscale``."""
    form = {"metric": metric, "high": high, "low": low, "min_replicas": min_replicas,
            "max_replicas": max_replicas, "up_for_s": up_for_s, "down_for_s": down_for_s,
            "cooldown_s": cooldown_s, "window_s": window_s}  # fmt: skip
    values = {k: v.strip() for k, v in form.items() if v.strip()}
    try:
        policy = AutoscalePolicy.model_validate({**values, "deployment": name})
        p.deployments.aiops.autoscaler.set_policy(policy)
    except ValidationError as exc:
        return _deployment_page(
            p, request, name, autoscale_form=form, autoscale_error=form_problems(exc)
        )
    return redirect(f"/deployments/{name}")


@router.post("/deployments/{name}/autoscale/delete")
@allow("editor")
def delete_autoscale(p: P, name: DeploymentName) -> Response:
    """Stop autoscaling the deployment (its replicas stay as they are)."""
    p.deployments.aiops.autoscaler.delete_policy(name)
    return redirect(f"/deployments/{name}")


@router.post("/deployments/{name}/release")
@allow("editor")
def release_version(
    p: P, who: Caller, request: Request, name: DeploymentName, model: FormText = "",
    share: FormText = "", promote_after_s: FormText = "",
) -> Response:  # fmt: skip
    """Serve another version: on every replica now, or, with a ``share``, as a canary on
    that share of the traffic first (``POST /api/v1/deployments/NAME/release`` or
    ``/canary``); a problem is shown beside what was typed, and nothing changes."""
    form = {"model": model, "share": share, "promote_after_s": promote_after_s}
    values = {k: v.strip() for k, v in form.items() if v.strip()}
    try:
        if "share" in values:
            canary = CanaryRequest.model_validate(values)
            p.deployments.canaries.start(
                name, canary.model, share=canary.share,
                promote_after_s=canary.promote_after_s, user=who.name,
            )  # fmt: skip
        elif "promote_after_s" in values:
            raise PlatformError("promote after goes with a canary share (0-1); leave it empty "
                                "to release on every replica now")  # fmt: skip
        else:
            p.deployments.healer.release(
                name, ReleaseRequest.model_validate(values).model, who.name
            )
    except ValidationError as exc:
        return _deployment_page(
            p, request, name, release_form=form, release_error=form_problems(exc)
        )
    except LeptonError as exc:
        if isinstance(exc, NotFoundError):  # no such deployment: its error page
            raise
        return _deployment_page(p, request, name, release_form=form, release_error=exc.message)
    return redirect(f"/deployments/{name}")


@router.post("/deployments/{name}/canary/promote")
@allow("editor")
def promote_canary(p: P, who: Caller, name: DeploymentName) -> Response:
    """Promote the canary now: the deployment restarts on its version while the
    canary takes all the traffic, then the canary is deleted."""
    p.deployments.canaries.promote(name, who.name)
    return redirect(f"/deployments/{name}")


@router.post("/deployments/{name}/canary/abort")
@allow("editor")
def abort_canary(p: P, who: Caller, name: DeploymentName) -> Response:
    """Stop and delete the canary: the main version serves all the traffic again."""
    p.deployments.canaries.abort(name, who.name)
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
    return await run_in_threadpool(
        _deployment_page, p, request, name, answer=answer, answer_error=problem
    )


def _top_classes(answer: dict[str, Any]) -> dict[str, Any]:
    """The answer, plus its three most likely classes for the page."""
    probabilities = answer.get("probabilities") or []
    ranked = sorted(enumerate(probabilities), key=lambda item: -float(item[1]))[:3]
    return {**answer, "top": [(i, float(prob)) for i, prob in ranked]}
