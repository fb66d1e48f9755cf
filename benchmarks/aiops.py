"""AIOps benchmark: faults injected into a real deployment under load; time to detect,
time to heal, requests failed meanwhile, and false alarms over a clean period.

One ``DeploymentManager`` (the platform's, with its monitor and AIOps threads at 0.5 s)
serves ``iris-mlp`` (an MLP fit on the real iris training split) on 127.0.0.1 while a
load thread sends ``--rps`` predictions a second through its proxy. Rules:
``error_rate > 0.2`` for 2 s with ``action=rollback``, ``latency_ms_p95 > 1000`` for 10 s,
and ``anomalies > 3`` in 60 s (no action).

1. **Clean period** (``--clean-s`` seconds of steady load on v1): alerts fired,
   remediations taken (the target is 0), and, beside it in the same run, how many alarms
   the raw streaming detector (``AnomalyDetector("mad")`` on the same series, without the
   platform's absolute floor) would have raised.
2. **Bad version**: v2 (an MLP expecting 5 features: every request fails) is rolled out
   (the row's version changed and the deployment restarted, as a release would); time to
   the alert and until v1 answers again (rollback by the rule), from the release and from
   the first failed request, and requests failed meanwhile. Reference in
   the same run: the same fault with the rule's action ``none`` is not healed within the
   same budget (the monitor alone sees a healthy process).
3. **Killed replicas**: SIGKILL of the supervisor's process group; time until requests
   succeed again (the monitor's restart, no rule needed), requests failed meanwhile.

Usage:
    .venv/bin/python benchmarks/aiops.py                  # ~4 min on 2 busy cores
    .venv/bin/python benchmarks/aiops.py --clean-s 1800   # the issue's 30-minute window
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import torch


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Load:
    """Predictions at ``rps`` through the manager's proxy, in a thread; records statuses.

    Open loop: a request is sent every ``1 / rps`` seconds whether or not the earlier ones
    were answered (as independent clients do), so a hung replica cannot slow the load
    down; at most ``max_inflight`` wait at once (one more is logged as status 0).
    """

    def __init__(
        self,
        manager: Any,
        rows: list[list[float]],
        rps: float,
        name: str = "bench",
        max_inflight: int = 400,
    ) -> None:
        self.manager, self.rows, self.rps, self.name = manager, rows, rps, name
        self.max_inflight = max_inflight
        self.log: list[tuple[float, int]] = []  # (answered at, monotonic; status)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self._thread.start()

    async def _one(self, row: list[float]) -> None:
        body = json.dumps({"inputs": row}).encode()
        status, _, _ = await self.manager.predict(self.name, body, "application/json")
        self.log.append((time.monotonic(), status))

    async def _run(self) -> None:
        i, tasks, due = 0, set(), time.monotonic()
        while not self._stop.is_set():
            if len(tasks) < self.max_inflight:
                task = asyncio.create_task(self._one(self.rows[i % len(self.rows)]))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            else:
                self.log.append((time.monotonic(), 0))
            i += 1
            due += 1 / self.rps
            await asyncio.sleep(max(0.0, due - time.monotonic()))
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.manager.aclose()

    def failed_between(self, start: float, end: float) -> int:
        return sum(1 for t, s in self.log if start <= t <= end and s != 200)

    def first_ok_after(self, start: float, timeout: float) -> float | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ok = [t for t, s in self.log if t > start and s == 200]
            if ok:
                return ok[0]
            time.sleep(0.1)
        return None

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)


def _wait(check: Any, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.1)
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clean-s", type=float, default=90.0)
    parser.add_argument("--rps", type=float, default=10.0)
    parser.add_argument("--heal-budget-s", type=float, default=120.0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    home = Path(tempfile.mkdtemp(prefix="lepton-aiops-"))
    os.environ["LEPTON_HOME"] = str(home)

    import lepton as lp
    from lepton.monitor import AnomalyDetector
    from lepton.platform.deployments._aiops import SERIES, figures
    from lepton.platform.deployments._alerts import AlertRule
    from lepton.platform.deployments._manager import DeploymentManager, DeploymentRequest
    from lepton.storage import Database

    train = lp.data.load("iris", split="train")
    good = lp.models.MLP(in_features=4, num_classes=3, hidden=[16])
    lp.fit(good, train, epochs=3, batch_size=32, quiet=True, seed=0)
    lp.register(good, "iris-mlp", dataset=train)
    rows = lp.data.load("iris", split="test").features.tolist()
    db = Database(f"sqlite:///{home}/lepton.db")
    db.check()
    manager = DeploymentManager(db, home, port_range=(_free_port(), 65000), proxy_wait_s=60)
    store = manager.aiops.store
    store.add_rule(AlertRule(name="errors", metric="error_rate", threshold=0.2, window_s=5,
                             for_s=2, severity="critical", action="rollback"))  # fmt: skip
    store.add_rule(AlertRule(name="slow", metric="latency_ms_p95", threshold=1000, for_s=10))
    store.add_rule(AlertRule(name="anomalous", kind="anomaly", threshold=3, window_s=60))
    manager.create(DeploymentRequest(name="bench", model="iris-mlp:1"), "bench")
    manager.start_monitor(interval_s=0.5)
    results: dict[str, Any] = {}
    load = None
    try:
        _wait(lambda: manager.get("bench").state == "ready", 180)
        load = Load(manager, rows, args.rps)
        # 1. clean period, and the raw detector beside it
        raw = {s: AnomalyDetector("mad", min_samples=30) for s in SERIES}
        raw_alarms, seen = 0, None
        began = time.monotonic()
        while time.monotonic() - began < args.clean_s:
            summary = manager.metrics("bench", window_s=manager.aiops.anomaly_window_s)
            if summary.get("scraped_at") != seen:
                seen = summary.get("scraped_at")
                for series, value in figures(summary).items():
                    if series in raw and value is not None:
                        raw_alarms += raw[series].update(value).alarm
            time.sleep(0.25)
        alerts = store.alerts()
        results["clean"] = {
            "seconds": args.clean_s,
            "requests": len(load.log),
            "failed": load.failed_between(0, time.monotonic()),
            "alerts": len(alerts),
            "remediations": sum(1 for a in alerts if a["action"]),
            "anomalies_stored": {
                series: sum(1 for a in manager.aiops.anomalies("bench") if a["series"] == series)
                for series in SERIES
            },
            "raw_mad_alarms": raw_alarms,
        }
        print("clean:", results["clean"], flush=True)

        # 2. a bad version, healed by the rule; then the same without the action
        bad = lp.models.MLP(in_features=5, num_classes=3, hidden=[8])
        lp.register(bad, "iris-mlp")
        for action in ("rollback", "none"):
            errors = next(r for r in store.rules() if r.name == "errors")
            store.add_rule(errors.model_copy(update={"action": action}))
            _wait(lambda: not [a for a in store.firing() if a["rule"] == "errors"], 60)
            fault, wall = time.monotonic(), time.time()
            _release(manager, version=2)
            fired = _wait(
                lambda w=wall: [
                    a for a in store.alerts() if a["rule"] == "errors" and a["started_at"] > w
                ],
                args.heal_budget_s,
            )
            detect = time.monotonic() - fault if fired else None
            healed_at = None
            if action == "rollback" and fired:
                _wait(lambda: manager.get("bench").version == 1, args.heal_budget_s)
                healed_at = load.first_ok_after(time.monotonic() - 0.5, args.heal_budget_s)
            elif action == "none":
                time.sleep(min(30.0, args.heal_budget_s))  # does anything heal it?
                still = load.failed_between(time.monotonic() - 5, time.monotonic())
                healed_at = None if still else time.monotonic()
            end = healed_at or time.monotonic()
            first_failure = next((t for t, st in load.log if t >= fault and st != 200), None)
            results[f"bad_version_{action}"] = {
                "detect_s": detect,
                "detect_from_first_failure_s": None
                if detect is None or first_failure is None
                else fault + detect - first_failure,
                "heal_s": None if healed_at is None else healed_at - fault,
                "heal_from_first_failure_s": None
                if healed_at is None or first_failure is None
                else healed_at - first_failure,
                "failed_requests": load.failed_between(fault, end),
            }
            print(f"bad version ({action}):", results[f"bad_version_{action}"], flush=True)
            if action == "none":
                _release(manager, version=1)
                _wait(lambda: manager.get("bench").state == "ready", 180)

        # 3. killed replicas: the monitor restarts the supervisor
        _wait(lambda: load.first_ok_after(time.monotonic() - 1, 5), 60)
        rt = manager._runtimes.get("bench")
        assert rt is not None
        assert rt.pid is not None
        fault = time.monotonic()
        os.killpg(rt.pid, signal.SIGKILL)
        time.sleep(0.5)
        ok = load.first_ok_after(fault + 0.5, args.heal_budget_s)
        results["killed"] = {
            "heal_s": None if ok is None else ok - fault,
            "failed_requests": load.failed_between(fault, ok or time.monotonic()),
        }
        print("killed replicas:", results["killed"], flush=True)
    finally:
        teardown(load, manager, db)
    print(json.dumps(results, indent=2))


def teardown(load: Load | None, manager: Any, db: Any) -> None:
    """Stop the load, the AIOps threads and the ``bench`` deployment; close the database."""
    if load is not None:
        load.stop()
    manager.stop_monitor()
    manager.delete("bench", "bench")
    db.dispose()


def _release(manager: Any, version: int) -> None:
    """Serve ``iris-mlp:version`` (what a release does: the row's version, a restart)."""
    manager.healer.release("bench", str(version), "release")


if __name__ == "__main__":
    main()
