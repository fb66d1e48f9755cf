"""AIOps on a real deployment: `lepton deploy` supervisors on 127.0.0.1, a real SQLite
database, MLPs trained on real iris rows, a real webhook receiver.

Fault injection: the deployment serves a broken version (v2 takes 5 features, every
4-feature request fails). A rule on its error rate fires, POSTs the webhook, and rolls the
deployment back to v1 (audited); the alert resolves once v1 answers. Then its logged
inputs are compared with the training data its lineage records: real test rows, then
shifted ones (drift), and the gauges reach ``/metrics`` under the names the Grafana
dashboard uses.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

import lepton as lp
from helpers import WebhookReceiver
from lepton.platform.deployments._alerts import AlertRule
from lepton.platform.deployments._manager import DeploymentManager, DeploymentRequest
from lepton.serve._predlog import PredictionLogSpec
from lepton.storage import Database
from lepton.storage.schema import AuditRow

pytestmark = [pytest.mark.integration, pytest.mark.slow]  # two launches: ~2 min busy

GRAFANA = Path(__file__).parents[2] / "deploy" / "grafana" / "lepton-deployments.json"


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
    made = DeploymentManager(db, home, port_range=(_free_port(), 65000), proxy_wait_s=120)
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
