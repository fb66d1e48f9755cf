"""AIOps over the platform's deployments: anomalies on their metrics, drift of their
inputs, alert rules, remediation, and the Prometheus gauges of all of it.

:class:`AIOps` runs in its own thread next to the health monitor (every ``interval_s``):

* each ready deployment's live figures (``latency_ms_p95``, ``error_rate``, ``rps`` from
  the scraper, ``memory_mb`` of its processes) feed one streaming
  :class:`lepton.monitor.AnomalyDetector` (robust z-score) per series; an alarm whose
  change is also large in absolute terms is stored;
* a deployment with a prediction log gets a drift report every ``drift_interval_s``
  (:class:`~._drift_watch.DriftWatch`);
* every alert rule is evaluated on every ready deployment it names (one being
  restarted waits: its figures are not yet its own) (:class:`~._alerts.AlertStore`):
  pending, firing (stored, webhook, remediation action), resolved (stored, webhook).
  Actions are off unless a rule names one, wait ``cooldown_s`` between two, and are
  written to the audit log (actor ``aiops``);
* deployments with an autoscaling policy are scaled (:class:`~._autoscale.Autoscaler`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lepton.errors import DeploymentError, NotFoundError
from lepton.monitor import AnomalyDetector
from lepton.platform.deployments._aiops_metrics import SERIES, exposition, figures, watched
from lepton.platform.deployments._aiops_state import AIOpsState
from lepton.platform.deployments._alerts import AlertRule, AlertStore, post_webhook
from lepton.platform.deployments._autoscale import Autoscaler
from lepton.platform.deployments._drift_watch import DriftWatch
from lepton.platform.deployments._drift_watch import summary as drift_summary
from lepton.platform.deployments._healing import audit
from lepton.serve._predlog import read_predictions

if TYPE_CHECKING:
    from lepton.platform.deployments._manager import DeploymentManager

__all__ = ["SERIES", "AIOps", "figures"]

log = logging.getLogger("lepton.platform.aiops")


@dataclass
class _Watch:
    """The anomaly detectors of one deployment, and what they raised."""

    detectors: dict[str, AnomalyDetector] = field(default_factory=dict)
    history: dict[str, deque[float]] = field(default_factory=dict)
    anomalies: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=500))
    counts: dict[str, int] = field(default_factory=dict)
    last_scrape: float | None = None


def _large(value: float, typical: float, floor: float) -> bool:
    """Whether a change is worth an anomaly: past the series' absolute floor, and at least
    twice or at most half the typical value (small wobbles of a busy machine are not)."""
    low, high = sorted((abs(value), abs(typical)))
    return abs(value - typical) > floor and high >= 2 * low


class AIOps:
    """The AIOps loop of a :class:`DeploymentManager` (see the module docstring).

    Args:
        manager: The deployments it watches and heals.
        drift: Computes and keeps the drift reports.
        store: The rules and the alerts.
        anomaly_window_s: Window of the figures fed to the anomaly detectors.
    """

    def __init__(
        self,
        manager: DeploymentManager,
        *,
        drift: DriftWatch | None = None,
        store: AlertStore | None = None,
        anomaly_window_s: float = 10.0,
    ) -> None:
        self.manager = manager
        self.drift = drift or DriftWatch()
        self.store = store or AlertStore(manager.home)
        self.anomaly_window_s = anomaly_window_s
        self._lock = threading.Lock()
        self._watches: dict[str, _Watch] = {}
        self.state = AIOpsState(manager.database)  # anomalies and drift survive a restart
        self.drift.attach(self.state)
        for name, (found, counts) in self.state.anomalies().items():
            self._watches[name] = _Watch(anomalies=deque(found, maxlen=500), counts=counts)
        self._pending: dict[tuple[str, str], float] = {}
        self._open: dict[tuple[str, str], str] = {
            (a["rule"], a["deployment"]): a["id"] for a in self.store.firing()
        }
        self._acted: dict[tuple[str, str], float] = {}
        self.autoscaler = Autoscaler(manager)  # opt-in per deployment (its policies)
        # action=retrain: submits a job spec, answers its id (set by the platform, which
        # has the scheduler; None: retrain rules fail, and say why)
        self.submit_job: Callable[[dict[str, Any]], int] | None = None
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    # -- the thread ---------------------------------------------------------------------

    def start(self, interval_s: float = 1.0) -> None:
        """Run :meth:`tick` every ``interval_s`` in a background thread."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stopping.clear()
        self._thread = threading.Thread(
            target=self._run, args=(interval_s,), name="lepton-aiops", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread (after the round in progress)."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=120)
            self._thread = None

    def _run(self, interval_s: float) -> None:
        while not self._stopping.is_set():
            began = time.monotonic()
            try:
                self.tick()
            except Exception:
                log.exception("aiops round failed; trying again")
            self._stopping.wait(max(0.05, interval_s - (time.monotonic() - began)))

    # -- one round ----------------------------------------------------------------------

    def tick(self) -> None:
        """Anomalies, drift and rules over every deployment, once."""
        views = self.manager.list(0, 10_000)[0]
        for view in views:
            if view.desired != "running":
                continue
            try:
                self._observe(view.name)
                if view.state == "ready":
                    self._drift(view.name, view.ref)
            except Exception:
                log.exception("aiops on deployment %s failed", view.name)
        # a deployment being (re)started has no figures of its own yet: its rules wait
        names = {v.name for v in views if v.state == "ready"}
        canaries = self.manager.canaries
        rules = self.store.rules()
        for rule in rules:
            # a rule on a deployment also judges its canary, on the canary's own figures
            named = {rule.deployment, canaries.canary_of(rule.deployment or "")}
            for name in sorted(names if rule.deployment is None else names & named):
                try:
                    self._evaluate(rule, name)
                except NotFoundError:  # deleted in this round (a canary an action stopped)
                    names.discard(name)
                except Exception:
                    log.exception("alert rule %s on %s failed", rule.name, name)
        existing, by_name = {v.name for v in views}, {r.name: r for r in rules}
        for key in [key for key in self._open if key[1] not in existing]:
            self._resolve(key, by_name.get(key[0]))  # a deleted deployment (or canary)
        self.autoscaler.tick(views)
        canaries.tick({name for _, name in self._open})

    def _observe(self, name: str) -> None:
        summary = self.manager.metrics(name, window_s=self.anomaly_window_s)
        scraped = summary.get("scraped_at")
        with self._lock:
            watch = self._watches.setdefault(name, _Watch())
        if scraped is None or scraped == watch.last_scrape:
            return
        watch.last_scrape = scraped
        for series, value in figures(summary).items():
            floor = SERIES.get(series)
            if floor is None or value is None:
                continue
            detector = watch.detectors.setdefault(series, AnomalyDetector("mad", min_samples=30))
            history = watch.history.setdefault(series, deque(maxlen=120))
            result = detector.update(value)
            typical = sorted(history)[len(history) // 2] if history else value
            history.append(value)
            if result.alarm and _large(value, typical, floor):
                with self._lock:
                    watch.counts[series] = watch.counts.get(series, 0) + 1
                    watch.anomalies.append(
                        {"t": time.time(), "series": series, "value": value,
                         "typical": typical, "score": result.score}
                    )  # fmt: skip
                    recorded = (watch.anomalies[-1], dict(watch.counts))
                self.state.add_anomaly(name, *recorded)

    def _drift(self, name: str, ref: str) -> None:
        folder = self.manager.folder(name)
        if not (folder / "predictions").is_dir():
            return
        self.drift.maybe_check(name, ref, self.manager.manifest(ref), folder)

    # -- rules --------------------------------------------------------------------------

    def value(self, rule: AlertRule, name: str) -> float | None:
        """The number ``rule`` watches on deployment ``name`` now (``None``: no data)."""
        if rule.kind == "metric":
            assert rule.metric is not None
            summary = self.manager.metrics(name, window_s=rule.window_s)
            return watched(summary, rule.metric, rule.window_s, rule.min_requests)
        if rule.kind == "drift":
            return drift_summary(self.drift.report(name) or {}).share_drifted
        since = time.time() - rule.window_s
        return float(
            sum(1 for a in self.anomalies(name)
                if a["t"] >= since and rule.metric in (None, a["series"]))
        )  # fmt: skip

    def _evaluate(self, rule: AlertRule, name: str) -> None:
        key = (rule.name, name)
        value = self.value(rule, name)
        holds = value is not None and (
            value > rule.threshold if rule.op == ">" else value < rule.threshold
        )
        now = time.monotonic()
        if not holds:
            self._resolve(key, rule)
            return
        assert value is not None
        since = self._pending.setdefault(key, now)
        if key in self._open or now - since < rule.for_s:
            return
        alert = self.store.fire(rule, name, value)
        self._open[key] = alert["id"]
        log.warning("alert %s fired on %s (%s %s %s)", rule.name, name, value, rule.op,
                    rule.threshold)  # fmt: skip
        if rule.action != "none" and now - self._acted.get(key, -1e18) >= rule.cooldown_s:
            self._acted[key] = now
            outcome = self._remediate(rule, name, alert)
            alert = self.store.update(alert["id"], action=outcome) or alert
        self._notify(rule, alert)

    def _resolve(self, key: tuple[str, str], rule: AlertRule | None) -> None:
        """The alert of ``key`` (rule, deployment), if open, is resolved (webhook told)."""
        self._pending.pop(key, None)
        alert_id = self._open.pop(key, None)
        if alert_id is None:
            return
        alert = self.store.update(alert_id, state="resolved", resolved_at=time.time())
        log.info("alert %s on %s resolved", *key)
        if alert is not None and rule is not None:
            self._notify(rule, alert)

    def _remediate(self, rule: AlertRule, name: str, alert: dict[str, Any]) -> str:
        """Run the rule's action on ``name``; audited either way; answers what happened.
        A canary is rolled back by stopping it: its main deployment serves on."""
        parent = self.manager.canaries.parent_of(name)
        if (
            rule.action == "rollback"
            and parent is None
            and not self.manager.healer.released_within(name, rule.within_s)
        ):  # an old version slowed down: not the release's fault, an alert only
            return f"none: no release in the last {rule.within_s:.0f} s to roll back"
        status = 200
        try:
            if rule.action == "restart":
                self.manager.healer.restart(name, "aiops")
                outcome = "restarted"
            elif rule.action == "scale":
                now = self.manager.get(name).replicas
                if now >= rule.max_replicas:
                    outcome = f"not scaled: already {now} replicas (max_replicas)"
                else:
                    self.manager.scale(name, now + 1, "aiops")
                    outcome = f"scaled to {now + 1} replicas"
            elif rule.action == "retrain":
                if self.submit_job is None:
                    raise DeploymentError("this manager has no job scheduler to retrain with")
                assert rule.retrain_job is not None  # checked() pairs them
                outcome = f"retraining: job {self.submit_job(rule.retrain_job)} submitted"
            elif parent is not None:
                canary = self.manager.canaries.abort(parent, "aiops", f"rule {rule.name} fired")
                outcome = f"canary {canary.ref} stopped; {parent} serves on"
            else:
                view = self.manager.healer.rollback(name, "aiops")
                outcome = f"rolled back to {view.ref}"
        except Exception as exc:  # a LeptonError (no previous version) or a crash
            status = 500
            outcome = f"{rule.action} failed: {getattr(exc, 'message', exc)}"
        log.warning("aiops: %s on deployment %s (rule %s)", outcome, name, rule.name)
        audit(
            self.manager.database, "aiops", f"deployment.{rule.action}", name, status,
            {"rule": rule.name, "alert": alert["id"], "value": alert["value"], "outcome": outcome},
        )  # fmt: skip
        return outcome

    def _notify(self, rule: AlertRule, alert: dict[str, Any]) -> None:
        url = rule.webhook
        if url is None:
            return

        def send() -> None:
            outcome = post_webhook(url, {"alert": alert, "rule": rule.model_dump()})
            self.store.update(alert["id"], webhook=outcome)

        threading.Thread(target=send, name="lepton-alert-webhook", daemon=True).start()

    # -- reading ------------------------------------------------------------------------

    def predictions(self, name: str, limit: int = 100) -> list[dict[str, Any]]:
        """The newest logged predictions of deployment ``name`` (its ``prediction_log``),
        newest first; empty when it logs none.

        Raises:
            NotFoundError: No deployment has that name.
        """
        self.manager.get(name)
        return read_predictions(self.manager.folder(name) / "predictions", limit)

    def anomalies(self, name: str) -> list[dict[str, Any]]:
        """The anomalies stored for deployment ``name``, oldest first."""
        with self._lock:
            watch = self._watches.get(name)
            return [dict(a) for a in watch.anomalies] if watch is not None else []

    def forget(self, name: str) -> None:
        """Drop what is known of a deleted deployment."""
        with self._lock:
            self._watches.pop(name, None)
        self.autoscaler.decider.forget(name)
        self.state.forget(name)
        self.drift.forget(name)

    def exposition(self) -> bytes:
        """Prometheus text of the drift, anomaly and alert gauges, and the live figures."""
        return exposition(self)
