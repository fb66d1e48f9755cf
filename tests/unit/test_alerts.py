"""Alert rules and alerts: validation, storage across restarts, the webhook against a
real HTTP receiver on 127.0.0.1, the API and ``/metrics``; and the calibrated
Wasserstein threshold the drift verdict relies on (no alarm on a null draw)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError

import lepton as lp
from helpers import WebhookReceiver
from lepton.errors import AlertRuleError, NotFoundError
from lepton.monitor import wasserstein_threshold
from lepton.platform.deployments._aiops import figures
from lepton.platform.deployments._aiops_metrics import watched
from lepton.platform.deployments._alerts import AlertRule, AlertStore, post_webhook
from lepton.platform.deployments._monitor import _usage
from lepton.platform.deployments._runtime import Runtime, own_figures


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    made = WebhookReceiver([])
    yield made
    made.close()


def test_rules_are_checked_when_they_are_made() -> None:
    with pytest.raises(ValidationError, match="must use https"):
        AlertRule(name="r", kind="metric", metric="rps", webhook="http://example.org/hook")
    with pytest.raises(ValidationError, match="http"):
        AlertRule(name="r", metric="rps", webhook="ftp://127.0.0.1/x")
    with pytest.raises(AlertRuleError, match="needs metric= one of"):
        AlertRule(name="r", kind="metric").checked()
    with pytest.raises(AlertRuleError, match="no metric 'cpu'"):
        AlertRule(name="r", kind="anomaly", metric="cpu").checked()
    ok = AlertRule(name="r", metric="error_rate", webhook="http://localhost:9/x").checked()
    assert ok.action == "none"  # remediation is off unless asked


def test_rules_and_alerts_survive_a_restart(tmp_path: Path) -> None:
    store = AlertStore(tmp_path)
    rule = store.add_rule(AlertRule(name="errors", metric="error_rate", threshold=0.1))
    alert = store.fire(rule, "iris", 0.5)
    assert [a["id"] for a in store.firing()] == [alert["id"]]

    again = AlertStore(tmp_path)
    assert [r.name for r in again.rules()] == ["errors"]
    assert again.alerts()[0]["state"] == "firing"
    again.update(alert["id"], state="resolved", resolved_at=1.0)
    assert AlertStore(tmp_path).firing() == []
    assert again.delete_rule("errors").name == "errors"
    with pytest.raises(NotFoundError, match="no alert rule named 'errors'"):
        again.delete_rule("errors")


def test_the_webhook_is_retried_with_a_backoff_then_delivered(receiver: WebhookReceiver) -> None:
    receiver.plan = [503, 500]
    outcome = post_webhook(receiver.url, {"alert": {"id": "a1"}}, backoff_s=0.01)
    assert outcome == "delivered (200, try 3)"
    assert [b["alert"]["id"] for b in receiver.bodies] == ["a1", "a1", "a1"]


def test_a_refusing_or_absent_receiver_is_reported(receiver: WebhookReceiver) -> None:
    receiver.plan = [400]
    assert post_webhook(receiver.url, {}, backoff_s=0.01) == "failed: answered 400"
    assert len(receiver.bodies) == 1  # a 4xx is not retried
    url = receiver.url
    receiver.close()
    outcome = post_webhook(url, {}, tries=2, backoff_s=0.01, timeout_s=1.0)
    assert outcome.startswith("failed: ConnectError")


def test_figures_turn_a_scrape_summary_into_the_watched_numbers() -> None:
    values = figures({"rps": 20.0, "errors_per_s": 5.0, "latency_ms_p95": 12.0})
    assert values["error_rate"] == 0.25
    assert values["latency_ms_p95"] == 12.0
    assert figures({"rps": 0.0, "errors_per_s": 0.0})["error_rate"] == 0.0
    assert figures({"memory_mb": 612.5, "timeouts": 2.0})["memory_mb"] == 612.5


def test_a_rule_with_min_requests_judges_no_window_with_fewer() -> None:
    """A canary on 10% of 10 requests/s has 5 requests in a 5 s window: its p95 is one
    slow first request. ``min_requests`` makes such a window "no data" (nothing fires)."""
    canary = {"rps": 1.0, "errors_per_s": 0.0, "latency_ms_p95": 480.0}
    assert watched(canary, "latency_ms_p95", 5.0) == 480.0
    assert watched(canary, "latency_ms_p95", 5.0, min_requests=20) is None
    assert watched(canary, "latency_ms_p95", 30.0, min_requests=20) == 480.0  # 30 requests
    assert AlertRule(name="slow", metric="latency_ms_p95", min_requests=20).min_requests == 20
    with pytest.raises(ValueError, match="greater than or equal to 0"):
        AlertRule(name="slow", metric="latency_ms_p95", min_requests=-1)


def test_what_the_proxy_answered_counts_only_since_the_deployment_turned_ready() -> None:
    rt = Runtime(name="d", port=1, token="t", desired="running", state="ready")
    assert own_figures(None, 10.0) == {"memory_mb": None, "cpu_percent": None, "proxied": 0.0,
                                       "proxy_error_rate": 0.0, "timeouts": 0.0}  # fmt: skip
    now = time.time()
    rt.answers.extend([(now - 30, 504), (now - 3, 200), (now - 2, 504), (now - 1, 500)])
    rt.answers.extend([(now - 0.5, 200)] * 6)
    rt.memory_mb, rt.cpu_percent = 300.0, 42.0
    seen = own_figures(rt, 10.0)  # the 504 of 30 s ago is out of the window
    assert seen == {"memory_mb": 300.0, "cpu_percent": 42.0, "proxied": 9.0,
                    "proxy_error_rate": 2 / 9, "timeouts": 1.0}  # fmt: skip
    rt.serving_since = now - 1.5  # restarted: what the old processes answered is history
    assert own_figures(rt, 10.0)["timeouts"] == 0.0
    assert own_figures(rt, 10.0)["proxied"] == 7.0


def test_cpu_use_is_the_group_s_cpu_seconds_between_two_monitor_rounds() -> None:
    rt = Runtime(name="d", port=1, token="t", desired="running", state="ready")
    _usage(rt, (300.0, 10.0), now=100.0)  # the first round: nothing to compare with yet
    assert (rt.memory_mb, rt.cpu_percent) == (300.0, None)
    _usage(rt, (310.0, 10.5), now=101.0)  # half a core for a second
    assert (rt.memory_mb, rt.cpu_percent) == (310.0, 50.0)
    _usage(rt, (200.0, 4.0), now=102.0)  # a replica exited with its CPU seconds: no figure
    assert rt.cpu_percent == 50.0
    _usage(rt, (200.0, 6.0), now=103.0)  # two cores busy
    assert rt.cpu_percent == 200.0
    _usage(rt, None, now=104.0)  # the group is gone
    assert (rt.memory_mb, rt.cpu_percent, rt.cpu_seen) == (None, None, None)


def test_the_alerts_api_and_the_platform_metrics(client: Any) -> None:
    rule = {"name": "slow", "metric": "latency_ms_p95", "threshold": 250, "for_s": 30,
            "severity": "critical", "action": "scale", "max_replicas": 3}  # fmt: skip
    answer = client.post("/api/v1/alerts/rules", json=rule)
    assert answer.status_code == 201, answer.text
    assert answer.json()["action"] == "scale"
    bad = client.post("/api/v1/alerts/rules", json={"name": "x", "kind": "metric"})
    assert bad.status_code == 400
    assert bad.json()["error"]["code"] == "alert_rule_error"
    listed = client.get("/api/v1/alerts/rules").json()
    assert [r["name"] for r in listed["items"]] == ["slow"]
    assert listed["total"] == 1
    assert client.get("/api/v1/alerts").json()["items"] == []
    assert client.get("/api/v1/deployments/nope/drift").status_code == 404
    history = client.get("/api/v1/deployments/nope/drift/history")
    assert history.status_code == 404
    assert history.json()["error"]["message"].startswith("no deployment named 'nope'")
    assert client.get("/api/v1/deployments/nope/predictions").status_code == 404
    metrics = client.get("/metrics")
    assert metrics.status_code == 200
    assert metrics.headers["content-type"].startswith("text/plain")
    names = {f.name for f in text_string_to_metric_families(metrics.text)}
    assert {"lepton_drift_score", "lepton_alerts_firing", "lepton_deployment_ready"} <= names
    assert client.delete("/api/v1/alerts/rules/slow").status_code == 200
    assert client.get("/api/v1/alerts/rules").json()["total"] == 0


def test_the_wasserstein_default_holds_on_null_draws_and_sees_a_shift() -> None:
    assert wasserstein_threshold(285, 285, tests=30) > 0.1  # the old fixed default fired
    assert wasserstein_threshold(10**7, 10**7) == 0.1  # a floor: shifts too small to matter
    data = lp.data.load("breast-cancer", split="all").features.numpy()  # 569 rows, 30 features
    alarms = 0
    for seed in range(6):
        order = np.random.default_rng(seed).permutation(len(data))
        first, second = data[order[:284]], data[order[284:]]
        alarms += lp.monitor.drift(first, second, method="wasserstein").drifted
    assert alarms <= 1  # ~5% family-wise; the fixed 0.1 sd fired on every draw
    order = np.random.default_rng(0).permutation(len(data))
    shifted = data[order[284:]] + 0.5 * data.std(axis=0)
    report = lp.monitor.drift(data[order[:284]], shifted, method="wasserstein")
    assert report.drifted
    assert len(report.drifted_features) == 30


def test_the_alerts_page_adds_lists_and_deletes_rules(client: Any) -> None:
    page = client.get("/alerts")
    assert page.status_code == 200
    assert "No rules yet." in page.text
    bad = client.post("/alerts/rules", data={"name": "lat", "kind": "metric", "threshold": "x"})
    assert bad.status_code == 422
    assert 'value="lat"' in bad.text  # what was typed is kept
    form = {"name": "lat", "kind": "metric", "metric": "latency_ms_p95", "op": ">",
            "threshold": "250", "severity": "critical", "action": "restart"}  # fmt: skip
    added = client.post("/alerts/rules", data=form, follow_redirects=False)
    assert added.status_code == 303
    listed = client.get("/alerts").text
    assert "latency_ms_p95" in listed
    assert "restart" in listed
    gone = client.post("/alerts/rules/lat/delete", follow_redirects=False)
    assert gone.status_code == 303
    assert client.get("/api/v1/alerts/rules").json()["total"] == 0


RETRAIN = {"kind": "train", "model": "mlp", "data": "iris", "epochs": 1, "register": "iris-mlp"}


def test_a_retrain_rule_needs_a_valid_job_spec() -> None:
    with pytest.raises(AlertRuleError, match="action=retrain goes with retrain_job="):
        AlertRule(name="r", kind="drift", threshold=0.3, action="retrain").checked()
    with pytest.raises(AlertRuleError, match="retrain_job only with action=retrain"):
        AlertRule(name="r", kind="drift", retrain_job=RETRAIN).checked()
    with pytest.raises(AlertRuleError, match=r"retrain_job is not a job spec \(.*model"):
        AlertRule(name="r", kind="drift", action="retrain",
                  retrain_job={**RETRAIN, "model": "nope"}).checked()  # fmt: skip
    rule = AlertRule(name="r", kind="drift", action="retrain", retrain_job=RETRAIN).checked()
    assert rule.retrain_job == RETRAIN


def test_a_firing_retrain_rule_queues_its_job_once_per_cooldown(platform: Any, client: Any) -> None:
    """Through the API, as a user would set it; the action goes to the platform's own
    scheduler (a queued job by user ``aiops``) and into the audit log."""
    rule = {"name": "drifted", "kind": "drift", "threshold": 0.3, "action": "retrain",
            "retrain_job": RETRAIN, "cooldown_s": 3600}  # fmt: skip
    answer = client.post("/api/v1/alerts/rules", json=rule)
    assert answer.status_code == 201, answer.text
    bad = client.post("/api/v1/alerts/rules", json={**rule, "retrain_job": {"kind": "train",
                                                    "epochs": 0}})  # fmt: skip
    assert bad.status_code == 400
    assert "epochs" in bad.json()["error"]["message"]
    aiops = platform.deployments.aiops
    stored = aiops.store.rules()[0]
    alert = aiops.store.fire(stored, "iris", 0.5)
    outcome = aiops._remediate(stored, "iris", alert)
    job_id = int(outcome.removeprefix("retraining: job ").removesuffix(" submitted"))
    job = platform.jobs.get(job_id)
    assert (job.state, job.created_by) == ("queued", "aiops")
    assert {k: job.spec[k] for k in RETRAIN} == RETRAIN
    actions = [e["action"] for e in client.get("/api/v1/audit?limit=50").json()["items"]]
    assert "deployment.retrain" in actions
    # the page offers it, and says what is wrong with a spec that is not JSON
    form = {"name": "drift2", "kind": "drift", "threshold": "0.3", "action": "retrain",
            "retrain_job": "{kind: train"}  # fmt: skip
    page = client.post("/alerts/rules", data=form)
    assert page.status_code == 422
    assert "Retrain job: not JSON" in page.text
    assert 'value="{kind: train"' in page.text
