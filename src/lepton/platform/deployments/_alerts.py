"""Alert rules, the alerts they raised, and their webhooks.

A rule watches one number per deployment: a live metric (``latency_ms_p95``,
``error_rate``, ``memory_mb`` and ``cpu_percent`` of its processes, ``timeouts`` and
``proxy_error_rate`` of the answers its clients got through the platform, ...), the
share of features of its last drift report that drifted, or how many anomalies its
metrics' detectors raised in the last ``window_s``. When the number passes
``threshold`` for ``for_s`` seconds the alert fires; when it comes back it is resolved.
Both are stored
(``home/alerts/alerts.json``, the newest 1,000), and posted as JSON to the rule's webhook
(a thread; retries with a backoff and a timeout). A rule may name a remediation
``action`` (``restart``, ``scale``, ``rollback``: only within ``within_s`` of a version
change if set; ``retrain``: submit the rule's ``retrain_job``, a platform job spec, e.g.
a drift rule that trains the model again on fresh data), ``none`` by default.

Rules are kept in ``home/alerts/rules.json``; :class:`AlertStore` is the one place that
reads and writes both files.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx
from pydantic import BaseModel, ConfigDict, Field, field_validator

from lepton._fs import atomic_write_bytes, private_dir
from lepton.errors import AlertRuleError, NotFoundError

__all__ = ["METRICS", "AlertRule", "AlertStore", "post_webhook"]

log = logging.getLogger("lepton.platform.alerts")

METRICS = ("latency_ms_p95", "latency_ms_p99", "latency_ms_mean", "error_rate", "rps",
           "queue_depth", "memory_mb", "cpu_percent", "timeouts",
           "proxy_error_rate")  # fmt: skip
_KEEP = 1000


class AlertRule(BaseModel):
    """One alert rule (``POST /api/v1/alerts/rules``)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$", description="Unique rule name.")
    deployment: str | None = Field(None, max_length=63, description="One deployment; all if unset.")
    kind: Literal["metric", "drift", "anomaly"] = Field(
        "metric", description="metric: a live figure; drift: share of features drifted; "
        "anomaly: anomalies raised on the deployment's metrics in the last window_s.",
    )  # fmt: skip
    metric: str | None = Field(
        None, description=f"kind=metric: one of {', '.join(METRICS)}; kind=anomaly: only "
        "that series (all if unset).",
    )  # fmt: skip
    op: Literal[">", "<"] = Field(">", description="Fires when value op threshold.")
    threshold: float = Field(0.0, description="e.g. 0.05 for a 5% error rate.")
    for_s: float = Field(0.0, ge=0, le=86400, description="Seconds it must hold to fire.")
    window_s: float = Field(30.0, ge=1, le=3600, description="Window of the figure, seconds.")
    severity: Literal["info", "warning", "critical"] = "warning"
    webhook: str | None = Field(
        None, max_length=2000, description="POST alerts here (https; http on loopback only)."
    )
    action: Literal["none", "restart", "scale", "rollback", "retrain"] = Field(
        "none", description="Remediation when it fires (off by default); audited."
    )
    retrain_job: dict[str, Any] | None = Field(
        None, description="action=retrain: the job spec submitted when it fires, as "
        "POST /api/v1/jobs takes it, e.g. {\"kind\": \"train\", \"model\": \"convnet\", "
        "\"data\": \"mnist\", \"register\": \"mnist-convnet\"}.",
    )  # fmt: skip
    min_requests: int = Field(
        0, ge=0, le=1_000_000, description="kind=metric: judge a window only when it holds "
        "at least this many requests (a canary's small share, a quiet hour); fewer: no data.",
    )  # fmt: skip
    max_replicas: int = Field(4, ge=1, le=16, description="action=scale: at most this many.")
    cooldown_s: float = Field(120.0, ge=0, le=86400, description="Between two actions.")
    within_s: float | None = Field(
        None, ge=1, le=86400, description="action=rollback: only within this many seconds "
        "of a version change (a new version's first minutes); any time if unset.",
    )  # fmt: skip

    @field_validator("webhook")
    @classmethod
    def _webhook(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"webhook {value!r} must be an http(s) URL, e.g. https://hooks/x")
        if parts.scheme == "http" and not _loopback(parts.hostname):
            raise ValueError(f"webhook {value!r} must use https (http only on loopback)")
        return value

    def checked(self) -> AlertRule:
        """This rule, or an :class:`AlertRuleError` naming what to fix."""
        if self.kind == "metric" and self.metric not in METRICS:
            raise AlertRuleError(
                f"rule {self.name!r}: kind=metric needs metric= one of {', '.join(METRICS)}"
            )
        if self.kind == "anomaly" and self.metric is not None and self.metric not in METRICS:
            raise AlertRuleError(f"rule {self.name!r}: no metric {self.metric!r} to watch")
        if (self.action == "retrain") != (self.retrain_job is not None):
            raise AlertRuleError(
                f"rule {self.name!r}: action=retrain goes with retrain_job= (the job spec to "
                f'submit, e.g. {{"kind": "train", "model": "mlp", "data": "iris"}}), '
                f"and retrain_job only with action=retrain"
            )
        if self.retrain_job is not None:
            from pydantic import ValidationError

            from lepton.platform.jobs._specs import JobRequest

            try:
                JobRequest.model_validate({"spec": self.retrain_job})
            except ValidationError as exc:
                problems = "; ".join(
                    f"{'.'.join(map(str, e['loc'][1:])) or 'spec'}: {e['msg']}"
                    for e in exc.errors()
                )
                raise AlertRuleError(
                    f"rule {self.name!r}: retrain_job is not a job spec ({problems})"
                ) from None
        return self


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class AlertStore:
    """Rules and alerts, as JSON files under ``home/alerts/`` (one lock guards both)."""

    def __init__(self, home: Path) -> None:
        self.folder = Path(home) / "alerts"
        self._lock = threading.Lock()
        self._rules: dict[str, AlertRule] = {}
        self._alerts: list[dict[str, Any]] = []
        with contextlib.suppress(OSError, ValueError):
            raw = json.loads((self.folder / "rules.json").read_text())
            self._rules = {r["name"]: AlertRule.model_validate(r) for r in raw}
        with contextlib.suppress(OSError, ValueError):
            self._alerts = list(json.loads((self.folder / "alerts.json").read_text()))

    # -- rules --------------------------------------------------------------------------

    def rules(self) -> list[AlertRule]:
        """Every rule, by name."""
        with self._lock:
            return [self._rules[k] for k in sorted(self._rules)]

    def add_rule(self, rule: AlertRule) -> AlertRule:
        """Add (or replace) a rule."""
        rule.checked()
        with self._lock:
            self._rules[rule.name] = rule
            self._save_rules()
        return rule

    def delete_rule(self, name: str) -> AlertRule:
        """Remove a rule; answers it.

        Raises:
            NotFoundError: No rule has that name.
        """
        with self._lock:
            rule = self._rules.pop(name, None)
            if rule is None:
                raise NotFoundError(f"no alert rule named {name!r}; list them with "
                                    f"GET /api/v1/alerts/rules")  # fmt: skip
            self._save_rules()
        return rule

    # -- alerts -------------------------------------------------------------------------

    def alerts(self, *, deployment: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """The newest alerts first (firing and resolved)."""
        with self._lock:
            found = [a for a in self._alerts if deployment in (None, a["deployment"])]
        return [dict(a) for a in reversed(found[-limit:])]

    def fire(self, rule: AlertRule, deployment: str, value: float) -> dict[str, Any]:
        """Record a new firing alert; answers it."""
        alert = {
            "id": uuid.uuid4().hex[:12], "rule": rule.name, "deployment": deployment,
            "kind": rule.kind, "metric": rule.metric, "severity": rule.severity,
            "state": "firing", "value": value, "threshold": rule.threshold, "op": rule.op,
            "started_at": time.time(), "resolved_at": None, "action": None, "webhook": None,
        }  # fmt: skip
        with self._lock:
            self._alerts = [*self._alerts[-(_KEEP - 1) :], alert]
            self._save_alerts()
        return dict(alert)

    def update(self, alert_id: str, **values: Any) -> dict[str, Any] | None:
        """Set fields of a stored alert (``state``, ``action``, ``webhook``, ...)."""
        with self._lock:
            for alert in self._alerts:
                if alert["id"] == alert_id:
                    alert.update(values)
                    self._save_alerts()
                    return dict(alert)
        return None

    def firing(self) -> list[dict[str, Any]]:
        """The alerts firing now."""
        with self._lock:
            return [dict(a) for a in self._alerts if a["state"] == "firing"]

    # -- files --------------------------------------------------------------------------

    def _save_rules(self) -> None:
        private_dir(self.folder)
        data = [r.model_dump() for r in self._rules.values()]
        atomic_write_bytes(self.folder / "rules.json", json.dumps(data).encode())

    def _save_alerts(self) -> None:
        private_dir(self.folder)
        atomic_write_bytes(self.folder / "alerts.json", json.dumps(self._alerts).encode())


def post_webhook(
    url: str,
    payload: dict[str, Any],
    *,
    tries: int = 4,
    backoff_s: float = 0.5,
    timeout_s: float = 5.0,
) -> str:
    """POST ``payload`` as JSON; retried on a connection error or a 5xx/429 answer with
    an exponential backoff. Answers what happened (``delivered (200)``, ``failed: ...``)."""
    outcome = "failed: not tried"
    with httpx.Client(trust_env=False, timeout=timeout_s) as client:
        for attempt in range(tries):
            try:
                answer = client.post(url, json=payload)
            except httpx.HTTPError as exc:
                outcome = f"failed: {type(exc).__name__}: {exc}"[:300]
            else:
                if answer.status_code < 300:
                    return f"delivered ({answer.status_code}, try {attempt + 1})"
                outcome = f"failed: answered {answer.status_code}"
                if answer.status_code < 500 and answer.status_code != 429:
                    return outcome  # the receiver refused it: retrying changes nothing
            if attempt + 1 < tries:
                time.sleep(backoff_s * 2**attempt)
    log.warning("alert webhook %s: %s", url, outcome)
    return outcome
