"""Monitoring of the deployments: alert rules and alerts (``/api/v1/alerts``), each
deployment's logged predictions, drift reports (the last, and the history) and metric
anomalies, and the platform's Prometheus ``/metrics`` (drift, anomaly and alert gauges,
and the live figures)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from lepton.platform._deps import P
from lepton.platform._http import Page, PageQuery, allow
from lepton.platform.deployments._alerts import AlertRule
from lepton.platform.deployments._drift_watch import DriftSummary
from lepton.platform.deployments._specs import NAME

__all__ = ["router"]

router = APIRouter()
DeploymentName = Annotated[str, Path(pattern=f"^{NAME.pattern}$")]
RuleName = Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")]


@router.get("/api/v1/alerts/rules", tags=["alerts"])
@allow("viewer")
def alert_rules(p: P, paging: PageQuery) -> Page[AlertRule]:
    """Alert rules, by name."""
    rules = p.deployments.aiops.store.rules()
    return Page.of((rules[paging.offset : paging.offset + paging.limit], len(rules)), paging)


@router.post("/api/v1/alerts/rules", tags=["alerts"], status_code=201)
@allow("editor")
def add_alert_rule(p: P, body: AlertRule) -> AlertRule:
    """Add a rule (one of the same name is replaced). Its ``action`` (restart, scale,
    rollback) is off unless named; each action taken is in the audit log."""
    return p.deployments.aiops.store.add_rule(body)


@router.delete("/api/v1/alerts/rules/{name}", tags=["alerts"])
@allow("editor")
def delete_alert_rule(p: P, name: RuleName) -> AlertRule:
    """Remove a rule; answers it."""
    return p.deployments.aiops.store.delete_rule(name)


@router.get("/api/v1/alerts", tags=["alerts"])
@allow("viewer")
def alerts(
    p: P, paging: PageQuery, deployment: Annotated[str | None, Query(max_length=63)] = None
) -> Page[dict[str, Any]]:
    """Alerts, newest first: firing and resolved, with the action taken and the webhook's
    delivery."""
    found = p.deployments.aiops.store.alerts(deployment=deployment, limit=1000)
    return Page.of((found[paging.offset : paging.offset + paging.limit], len(found)), paging)


@router.get("/api/v1/deployments/{name}/predictions", tags=["deployments"])
@allow("viewer")
def predictions(
    p: P, name: DeploymentName, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> list[dict[str, Any]]:
    """The newest logged predictions (inputs without the excluded fields, and outputs),
    newest first; empty unless the deployment was created with ``prediction_log``."""
    return p.deployments.aiops.predictions(name, limit)


@router.get("/api/v1/deployments/{name}/drift", tags=["deployments"])
@allow("viewer")
def drift(p: P, name: DeploymentName) -> dict[str, Any]:
    """The last drift report of the logged inputs against the training data in the
    version's lineage (``error`` says why there is none yet)."""
    p.deployments.get(name)
    report = p.deployments.aiops.drift.report(name)
    return report or {"deployment": name, "error": "no report yet: it needs a prediction_log"}


@router.get("/api/v1/deployments/{name}/drift/history", tags=["deployments"])
@allow("viewer")
def drift_history(
    p: P, name: DeploymentName, limit: Annotated[int, Query(ge=1, le=500)] = 50
) -> list[DriftSummary]:
    """The stored drift reports, newest first (the newest 50 are kept), in brief: when,
    the verdict, the share of features drifted, the top features' statistics, the rows
    compared and the reference (``error`` says why a report has no verdict)."""
    p.deployments.get(name)
    return p.deployments.aiops.drift.history(name, limit)


@router.get("/api/v1/deployments/{name}/anomalies", tags=["deployments"])
@allow("viewer")
def anomalies(p: P, name: DeploymentName) -> list[dict[str, Any]]:
    """Anomalies raised on the deployment's latency p95, error rate and request rate,
    oldest first."""
    p.deployments.get(name)
    return p.deployments.aiops.anomalies(name)


@router.get("/metrics", tags=["server"])
@allow("viewer")
def metrics(p: P) -> Response:
    """Prometheus text: ``lepton_drift_score{deployment,feature,statistic}``,
    ``lepton_drift_detected``, ``lepton_anomalies``, ``lepton_alerts_firing`` and the
    deployments' live figures (``lepton_deployment_*``)."""
    return Response(p.deployments.aiops.exposition(), media_type=CONTENT_TYPE_LATEST)
