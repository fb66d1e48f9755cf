"""AIOps on a real deployment: `lepton deploy` supervisors on 127.0.0.1, a real SQLite
database, MLPs trained on real iris rows, a real webhook receiver.

Fault injection: the deployment serves a broken version (v2 takes 5 features, every
4-feature request fails). A rule on its error rate fires, POSTs the webhook, and rolls the
deployment back to v1 (audited); the alert resolves once v1 answers. Then its logged
inputs are compared with the training data its lineage records: real test rows, then
shifted ones (drift), and the gauges reach ``/metrics`` under the names the Grafana
dashboard uses.

Autoscaling: a model that spends 100 ms a row (``bench-faulty-mlp`` from
``benchmarks/faults/``, importable in the replicas through ``PYTHONPATH``) under more
load than one replica serves; its queue depth scales it to two replicas, and back to one
once the load stops, both audited.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

import lepton as lp
from helpers import WebhookReceiver
from lepton.platform.deployments._alerts import AlertRule
from lepton.platform.deployments._autoscale import AutoscalePolicy
from lepton.platform.deployments._manager import DeploymentManager, DeploymentRequest
from lepton.serve._predlog import PredictionLogSpec
from lepton.storage import Database
from lepton.storage.schema import AuditRow

pytestmark = [pytest.mark.integration, pytest.mark.slow]  # two launches: ~2 min busy

GRAFANA = Path(__file__).parents[2] / "deploy" / "grafana" / "lepton-deployments.json"
FAULTS = Path(__file__).parents[2] / "benchmarks" / "faults"


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """iris-mlp:1 fit on the real iris training split (its lineage names it), and a
    broken iris-mlp:2 that expects 5 features."""
    folder = tmp_path_factory.mktemp("aiops-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LEPTON_HOME", str(folder))
        train = lp.data.load("iris", split="train")
        good = lp.models.MLP(in_features=4, num_classes=3, hidden=[16])
        lp.fit(good, train, epochs=1, batch_size=32, quiet=True, seed=0)
        lp.register(good, "iris-mlp", dataset=train)
        lp.register(lp.models.MLP(in_features=5, num_classes=3, hidden=[8]), "iris-mlp")
        yield folder


@pytest.fixture
def manager(home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[DeploymentManager]:
    monkeypatch.setenv("LEPTON_HOME", str(home))
    db = Database(f"sqlite:///{home}/lepton.db")
    db.check()
    made = DeploymentManager(
        db, home, port_range=(_free_port(), 65000), proxy_wait_s=120, grace_s=2.0
    )  # a scale drains the old supervisor for up to grace_s
    yield made
    pids = {rt.pid for rt in made._runtimes.all() if rt.pid is not None}
    for view in made.list(0, 100)[0]:
        made.delete(view.name, "test")
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
    db.dispose()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _until(manager: DeploymentManager, check: Callable[[], Any], timeout: float = 180) -> Any:
    """Run monitor and AIOps rounds until ``check()`` is truthy (generous: replicas
    importing torch on a busy two-core machine take up to a minute)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        manager.tick()
        manager.aiops.tick()
        found = check()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"timed out; {manager.get('watched')}\n{manager.log_tail('watched')}")


def _predict(manager: DeploymentManager, rows: list[list[float]]) -> list[int]:
    async def run() -> list[int]:
        try:
            statuses = []
            for row in rows:
                body = json.dumps({"inputs": row}).encode()
                statuses.append((await manager.predict("watched", body, "application/json"))[0])
            return statuses
        finally:
            await manager.aclose()

    return asyncio.run(run())


def test_a_broken_version_is_rolled_back_and_drift_is_seen(
    manager: DeploymentManager, home: Path
) -> None:
    receiver = WebhookReceiver([500])  # its first delivery fails: the webhook retries
    try:
        rule = AlertRule(
            name="errors", deployment="watched", metric="error_rate", threshold=0.5,
            window_s=5, for_s=1, severity="critical", action="rollback", webhook=receiver.url,
        )  # fmt: skip
        manager.aiops.store.add_rule(rule)
        request = DeploymentRequest(
            name="watched", model="iris-mlp:2", prediction_log=PredictionLogSpec(rate=1.0)
        )
        manager.create(request, "ada")
        _until(manager, lambda: manager.get("watched").state == "ready")
        test = lp.data.load("iris", split="test").features.tolist()

        injected = time.monotonic()
        assert set(_predict(manager, test[:10])) >= {500} or all(
            s >= 400 for s in _predict(manager, test[:2])
        )
        fired = _until(manager, lambda: manager.aiops.store.alerts(deployment="watched"), 60)
        detect_s = time.monotonic() - injected
        assert fired[0]["rule"] == "errors"
        assert fired[0]["value"] > 0.5
        assert fired[0]["action"] == "rolled back to iris-mlp:1"
        _until(manager, lambda: manager.get("watched").state == "ready")
        heal_s = time.monotonic() - injected
        assert manager.get("watched").version == 1
        print(f"\nfault injected -> alert in {detect_s:.1f} s, healed in {heal_s:.1f} s")

        assert _predict(manager, test[:30]) == [200] * 30
        resolved = _until(
            manager,
            lambda: [a for a in manager.aiops.store.alerts() if a["state"] == "resolved"],
            60,
        )
        assert resolved[0]["resolved_at"] >= resolved[0]["started_at"]
        deadline = time.monotonic() + 30
        while len(receiver.bodies) < 3 and time.monotonic() < deadline:
            time.sleep(0.1)  # firing: 500, then 200 on its retry; resolved: 200
        states = [b["alert"]["state"] for b in receiver.bodies]
        assert sorted(states) == ["firing", "firing", "resolved"]  # the threads race
        with manager.database.session() as s:
            audit = s.scalars(select(AuditRow).where(AuditRow.actor == "aiops")).all()
            assert [(a.action, a.status) for a in audit] == [("deployment.rollback", 200)]
            assert audit[0].detail["outcome"] == "rolled back to iris-mlp:1"

        logged = manager.aiops.predictions("watched", limit=100)
        assert len(logged) >= 30
        assert logged[0]["outputs"] is not None
        drift = manager.aiops.drift
        drift.interval_s, drift.window = 0.0, 30
        same = _until(manager, lambda: (drift.report("watched") or {}).get("features"), 60)
        assert len(same) == 4
        assert "iris (train" in drift.report("watched")["reference"]
        shifted = [[3 * v + 5 for v in row] for row in test[:30]]
        assert _predict(manager, shifted) == [200] * 30
        moved = _until(manager, lambda: (drift.report("watched") or {}).get("drifted"), 60)
        assert moved is True

        text = manager.aiops.exposition().decode()
        assert 'lepton_drift_detected{deployment="watched"} 1.0' in text
        assert re.search(r'lepton_drift_score\{deployment="watched",feature="x0"', text)
        dashboard = json.loads(GRAFANA.read_text())
        exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
        used = set(re.findall(r"lepton_[a-z0-9_]+", exprs))
        exposed = set(re.findall(r"^# TYPE (lepton_[a-z0-9_]+) ", text, re.M))
        assert len(used) >= 8
        assert used <= exposed, used - exposed
    finally:
        receiver.close()


def test_a_loaded_deployment_scales_up_then_back_down(
    manager: DeploymentManager, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTHONPATH", str(FAULTS))  # the replicas import the model class
    monkeypatch.syspath_prepend(str(FAULTS))
    sys.modules.pop("lepton_faults", None)
    from lepton_faults import FaultyMLP

    lp.register(FaultyMLP(delay_ms=100.0), "slow-mlp", dataset=lp.data.load("iris", split="train"))
    manager.create(DeploymentRequest(name="watched", model="slow-mlp:1"), "ada")
    _until(manager, lambda: manager.get("watched").state == "ready")
    manager.aiops.autoscaler.set_policy(AutoscalePolicy(
        deployment="watched", metric="queue_depth", high=3, low=1, min_replicas=1,
        max_replicas=2, up_for_s=2, down_for_s=4, cooldown_s=5, window_s=5,
    ))  # fmt: skip
    statuses: list[int] = []
    stop = threading.Event()

    async def load() -> None:  # open loop: 15 rows/s, one replica serves 10
        tasks = set()
        while not stop.is_set():
            body = json.dumps({"inputs": [5.1, 3.5, 1.4, 0.2]}).encode()
            task = asyncio.ensure_future(manager.predict("watched", body, "application/json"))
            task.add_done_callback(lambda t: statuses.append(t.result()[0]))
            tasks.add(task)
            await asyncio.sleep(1 / 15)
        await asyncio.gather(*tasks)
        await manager.aclose()

    loader = threading.Thread(target=lambda: asyncio.run(load()), daemon=True)
    loader.start()
    try:
        _until(manager, lambda: manager.get("watched").replicas == 2, 120)
        _until(manager, lambda: manager.get("watched").state == "ready")
    finally:
        stop.set()
        loader.join(120)
    # overloaded at first, then replaced: the proxy holds requests rather than failing them
    assert statuses.count(200) > len(statuses) / 2, statuses
    _until(manager, lambda: manager.get("watched").replicas == 1, 120)
    with manager.database.session() as s:
        audit = s.scalars(select(AuditRow).where(AuditRow.actor == "autoscaler")).all()
    assert [(a.detail["from"], a.detail["to"], a.status) for a in audit] == [
        (1, 2, 200),
        (2, 1, 200),
    ]
    assert "queue_depth" in audit[0].detail["reason"]
    assert "< 1 for" in audit[1].detail["reason"]


def test_a_canary_is_judged_on_its_own_share_then_stopped_or_promoted(
    manager: DeploymentManager, home: Path
) -> None:
    """A broken version as a canary at half the traffic: its own error rate fires the rule
    that names the main deployment, which stops the canary; the main version never
    restarted and its own figures stay clean. A good version as a canary is promoted after
    ``promote_after_s``, and no client sees the main deployment restart on it."""
    rule = AlertRule(
        name="canary-errors", deployment="watched", metric="error_rate", threshold=0.5,
        window_s=5, for_s=1, severity="critical", action="rollback",
    )  # fmt: skip
    manager.aiops.store.add_rule(rule)
    began = time.time()  # alerts of the module's earlier tests are stored in the same home
    manager.create(DeploymentRequest(name="watched", model="iris-mlp:1"), "ada")
    _until(manager, lambda: manager.get("watched").state == "ready")
    main_pid = manager.get("watched").pid
    canaries = manager.canaries
    started = canaries.start("watched", "2", share=0.5, promote_after_s=3600, user="ada")
    assert (started.canary, started.ref, started.share) == ("watched-canary", "iris-mlp:2", 0.5)
    assert (
        json.loads((home / "deployments" / "watched" / "canary.json").read_text())["version"] == 2
    )
    _until(manager, lambda: manager.get("watched-canary").state == "ready")

    test = lp.data.load("iris", split="test").features.tolist()
    statuses = _predict(manager, test[:40])
    assert 5 <= sum(s != 200 for s in statuses) <= 35, statuses  # the canary's share failed
    fired = _until(manager, lambda: manager.aiops.store.alerts(deployment="watched-canary"), 60)
    assert fired[0]["action"] == "canary iris-mlp:2 stopped; watched serves on"
    assert canaries.of("watched") is None
    assert not (home / "deployments" / "watched" / "canary.json").exists()
    assert "watched-canary" not in {v.name for v in manager.list(0, 100)[0]}
    main = manager.get("watched")
    assert (main.version, main.pid, main.restarts, main.state) == (1, main_pid, 0, "ready")
    on_main = manager.aiops.store.alerts(deployment="watched")
    assert [a for a in on_main if a["started_at"] >= began] == []  # judged apart
    assert _predict(manager, test[:10]) == [200] * 10

    train = lp.data.load("iris", split="train")
    good = lp.models.MLP(in_features=4, num_classes=3, hidden=[16])
    lp.fit(good, train, epochs=1, batch_size=32, quiet=True, seed=1)
    assert lp.register(good, "iris-mlp", dataset=train).version == 3
    canaries.start("watched", "iris-mlp:3", share=0.5, promote_after_s=0, user="ada")
    _until(manager, lambda: manager.get("watched-canary").state == "ready")
    served: list[int] = []

    def promoted() -> bool:
        served.extend(_predict(manager, test[:3]))  # traffic all through the promotion
        view = manager.get("watched")
        return canaries.of("watched") is None and (view.version, view.state) == (3, "ready")

    _until(manager, promoted)
    assert set(served) == {200}, served
    assert manager.get("watched").pid != main_pid  # it did restart, on version 3
    assert "watched-canary" not in {v.name for v in manager.list(0, 100)[0]}
    with manager.database.session() as s:
        actions = [a.action for a in s.scalars(select(AuditRow).where(
            AuditRow.target == "deployment/watched", AuditRow.actor == "aiops"))]  # fmt: skip
    assert actions[-2:] == ["deployment.canary_promote", "deployment.canary_promoted"]
