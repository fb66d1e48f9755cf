"""The Alerts page: the alert rules (add, delete) and the alerts they raised, firing and
resolved, with the remediation taken and the webhook's delivery.

The form builds the same :class:`~lepton.platform.deployments._alerts.AlertRule` the REST
API takes (``POST /api/v1/alerts/rules``), leaving out empty fields so its defaults apply.
"""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Path, Request
from fastapi.responses import Response
from pydantic import ValidationError

from lepton.errors import LeptonError
from lepton.platform._deps import P
from lepton.platform._http import allow
from lepton.platform._state import Platform
from lepton.platform.deployments._alerts import METRICS, AlertRule
from lepton.platform.web._render import form_problems, redirect, render

__all__ = ["router"]

router = APIRouter(include_in_schema=False)
RuleName = Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")]
_FIELDS = ("name", "deployment", "kind", "metric", "op", "threshold", "for_s", "window_s",
           "severity", "webhook", "action", "max_replicas", "retrain_job")  # fmt: skip


def _page(
    p: Platform, request: Request, *, form: dict[str, str] | None = None, error: str = ""
) -> Response:
    store = p.deployments.aiops.store
    return render(
        request,
        "alerts.html",
        section="/alerts",
        status=422 if error else 200,
        rules=store.rules(),
        alerts=store.alerts(limit=200),
        metrics=METRICS,
        deployments=[d.name for d in p.deployments.list(0, 500)[0]],
        form=form or {"kind": "metric", "op": ">", "severity": "warning", "action": "none"},
        error=error,
    )


@router.get("/alerts")
@allow("viewer")
def alerts(p: P, request: Request) -> Response:
    """Alert rules and the alerts they raised."""
    return _page(p, request)


@router.post("/alerts/rules")
@allow("editor")
async def add_rule(p: P, request: Request) -> Response:
    """Add (or replace) an alert rule from the form."""
    submitted = await request.form()
    form = {k: str(submitted.get(k, ""))[:2000] for k in _FIELDS}
    values: dict[str, object] = {k: v.strip() for k, v in form.items() if v.strip()}
    if "retrain_job" in values:  # a job spec, as JSON
        try:
            values["retrain_job"] = json.loads(str(values["retrain_job"]))
        except ValueError as exc:
            return _page(p, request, form=form, error=f"Retrain job: not JSON ({exc})")
    try:
        rule = AlertRule.model_validate(values)
        p.deployments.aiops.store.add_rule(rule)
    except ValidationError as exc:
        return _page(p, request, form=form, error=form_problems(exc))
    except LeptonError as exc:
        return _page(p, request, form=form, error=exc.message)
    return redirect("/alerts")


@router.post("/alerts/rules/{name}/delete")
@allow("editor")
def delete_rule(p: P, name: RuleName) -> Response:
    """Remove an alert rule."""
    p.deployments.aiops.store.delete_rule(name)
    return redirect("/alerts")
