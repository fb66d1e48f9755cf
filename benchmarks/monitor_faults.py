"""Faults injected into a real deployment under load, detected and healed by the platform's
rules: time to detect, time to recover, requests failed meanwhile; and the alarms and
remediations of a clean period (the target: none).

One ``DeploymentManager`` (the platform's, monitor and AIOps threads at 0.5 s) serves
``faulty:1`` (``bench-faulty-mlp`` from ``benchmarks/faults/``, fit on the real iris
training split) with ``--replicas`` replicas on 127.0.0.1, while an open-loop load
sends ``--rps`` predictions a second through its proxy (``Load`` of ``aiops.py``). The
model's own code misbehaves on demand (see ``benchmarks/faults/lepton_faults.py``): no
test hook in Lepton. The rules, as an operator would write them:

========== ========================================= =========================
rule       fires when                                 action
========== ========================================= =========================
hung       ``timeouts > 0`` in 10 s (504 answers)     restart
errors     ``error_rate > 0.05`` over 5 s, for 2 s   restart
slow       ``latency_ms_p95 > 200`` over 5 s, for 3 s rollback (within 300 s of a release)
memory     ``memory_mb > baseline + 300`` for 2 s     restart
anomalous  > 3 anomalies in 60 s                      none (an alert only)
========== ========================================= =========================

Faults, one after another (each waits for the previous one's alerts to resolve):

1. **hang**: the replica's forward never returns (the process lives and answers its
   probes; requests it took wait until the proxy's 5 s deadline);
2. **errors**: the replica fails 20% of its batches (500);
3. **latency regression**: ``faulty:2`` (same weights, 80 ms per row) is released;
4. **leak**: the replica keeps 4 MiB per request;
5. **canary** (``--faults canary,release``): ``faulty:4``, a version that fails 20% of its
   batches, as a canary on 10% of the traffic: stopped by a ``rollback`` rule on the
   canary's own error rate, the main version never restarted;
6. **release**: the same version released on every replica: rolled back.

The fault is put in the replicas running at that moment (one by default; with
``--replicas 2`` both: the proxy's kept-alive connections may all sit on one replica, so
a fault in the other would see no traffic). The restart that heals it starts clean ones.

Usage:
    .venv/bin/python benchmarks/monitor_faults.py                 # ~5 min on 2 busy cores
    .venv/bin/python benchmarks/monitor_faults.py --clean-s 1800  # the issue's 30 minutes
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
FAULTS = HERE / "faults"
sys.path[:0] = [str(HERE), str(FAULTS)]
# the replicas find the model class there too (sitecustomize.py imports it at start-up)
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (str(FAULTS), os.environ.get("PYTHONPATH", "")) if p
)

from aiops import Load, _free_port, _wait, teardown  # noqa: E402

RULE_OF = {"hang": "hung", "errors": "errors", "latency": "slow", "leak": "memory",
           "canary": "broken", "release": "broken"}  # fmt: skip
BROKEN = "4"  # faulty:4 fails 20% of its batches (faulty:3, before it, is a good copy)


def _replicas(supervisor: int) -> list[int]:
    """The pids of a supervisor's replicas (its process group, ``lepton.serve._worker``)."""
    from lepton.platform._procs import proc_stat

    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        stat = proc_stat(int(entry.name))
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if stat is not None and stat.group == supervisor and b"lepton.serve._worker" in cmdline:
            found.append(int(entry.name))
    return sorted(found)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--clean-s", type=float, default=60.0)
    parser.add_argument("--rps", type=float, default=10.0)
    parser.add_argument("--replicas", type=int, default=1)
    parser.add_argument("--budget-s", type=float, default=120.0, help="per fault")
    parser.add_argument("--faults", default="hang,errors,latency,leak")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # clean up on a kill too
    torch.set_num_threads(1)
    home = Path(tempfile.mkdtemp(prefix="lepton-faults-"))
    os.environ["LEPTON_HOME"] = str(home)
    fault_file = home / "fault.json"
    os.environ["LEPTON_BENCH_FAULT_FILE"] = str(fault_file)

    from lepton_faults import FaultyMLP, inject

    import lepton as lp
    from lepton.platform.deployments._alerts import AlertRule
    from lepton.platform.deployments._manager import DeploymentManager, DeploymentRequest
    from lepton.storage import Database

    train = lp.data.load("iris", split="train")
    good = FaultyMLP()
    lp.fit(good, train, epochs=3, batch_size=32, quiet=True, seed=0)
    lp.register(good, "faulty", dataset=train)
    slow = FaultyMLP(delay_ms=80.0)
    slow.load_state_dict(good.state_dict())
    lp.register(slow, "faulty", dataset=train)
    for error_rate in (0.0, 0.2):  # faulty:3 (good: what a rollback of 4 goes back to), 4
        copy = FaultyMLP(error_rate=error_rate)
        copy.load_state_dict(good.state_dict())
        lp.register(copy, "faulty", dataset=train)
    rows = lp.data.load("iris", split="test").features.tolist()
    db = Database(f"sqlite:///{home}/lepton.db")
    db.check()
    manager = DeploymentManager(
        db, home, port_range=(_free_port(), 65000), grace_s=2.0,
        predict_timeout_s=5.0, unhealthy_timeout_s=10.0, proxy_wait_s=60.0,
    )  # fmt: skip
    store = manager.aiops.store
    manager.create(
        DeploymentRequest(name="bench", model="faulty:1", replicas=args.replicas), "bench"
    )
    manager.start_monitor(interval_s=0.5)
    results: dict[str, Any] = {}
    load = None
    try:
        if not _wait(lambda: manager.get("bench").state == "ready", 300):
            raise SystemExit(f"not ready:\n{manager.log_tail('bench')}")
        load = Load(manager, rows, args.rps)
        time.sleep(15)  # warm: the memory baseline under load
        baseline = _wait(lambda: manager.metrics("bench", window_s=10).get("memory_mb"), 30)
        for rule in (
            AlertRule(name="hung", metric="timeouts", threshold=0, window_s=10,
                      severity="critical", action="restart", cooldown_s=30),
            AlertRule(name="errors", metric="error_rate", threshold=0.05, window_s=5, for_s=2,
                      severity="critical", action="restart", cooldown_s=30),
            AlertRule(name="slow", metric="latency_ms_p95", threshold=200, window_s=5, for_s=3,
                      action="rollback", within_s=300, cooldown_s=30),
            AlertRule(name="memory", metric="memory_mb", threshold=baseline + 300, window_s=5,
                      for_s=2, action="restart", cooldown_s=30),
            AlertRule(name="anomalous", kind="anomaly", threshold=3, window_s=60),
        ):  # fmt: skip
            store.add_rule(rule)

        # 1. the clean period: every rule armed, nothing wrong
        began, wall = time.monotonic(), time.time()
        time.sleep(args.clean_s)
        alerts = [a for a in store.alerts(limit=1000) if a["started_at"] >= wall]
        results["clean"] = {
            "seconds": args.clean_s,
            "requests": sum(1 for t, _ in load.log if t >= began),
            "failed": load.failed_between(began, time.monotonic()),
            "alerts": len(alerts),
            "remediations": _remediations(db, wall),
            "by_rule": dict(Counter(a["rule"] for a in alerts)),
            "anomalies": len([a for a in manager.aiops.anomalies("bench") if a["t"] >= wall]),
            "memory_mb_baseline": round(baseline, 1),
        }
        print("clean:", json.dumps(results["clean"]), flush=True)

        # 2. the faults
        for fault in args.faults.split(","):
            if fault in ("canary", "release"):
                results[fault] = _bad_version(manager, load, fault, args.budget_s)
            else:
                results[fault] = _one_fault(manager, load, fault, fault_file, inject, args.budget_s)
            print(f"{fault}:", json.dumps(results[fault]), flush=True)
    finally:
        teardown(load, manager, db)
    _table(results)
    print(json.dumps(results, indent=2))


def _one_fault(
    manager: Any, load: Any, fault: str, fault_file: Path, inject: Any, budget_s: float
) -> dict[str, Any]:
    store, rule = manager.aiops.store, RULE_OF[fault]
    quiet = _wait(lambda: not store.firing() and manager.get("bench").state == "ready", budget_s)
    if not quiet:
        return {"error": f"alerts still firing before the fault: {store.firing()}"}
    time.sleep(3)
    rt = manager._runtimes.get("bench")
    pids = _replicas(rt.pid) if rt is not None and rt.pid is not None else []
    start, wall = time.monotonic(), time.time()
    serving = None
    if fault == "latency":
        manager.healer.release("bench", "2", "release")  # blocks until v2 is launched
        if _wait(lambda: manager.get("bench").state == "ready", budget_s):
            serving = time.monotonic() - start  # v2 answers from here on
    else:
        inject(fault_file, fault, pids)  # the replicas running now misbehave
    fired = _wait(
        lambda: [a for a in store.alerts() if a["rule"] == rule and a["started_at"] >= wall],
        budget_s,
    )
    if not fired:
        return {"detect_s": None, "failed": load.failed_between(start, time.monotonic()),
                "action": f"no {rule!r} alert within {budget_s:.0f} s"}  # fmt: skip
    detected = start + (fired[-1]["started_at"] - wall)
    alert_id = fired[-1]["id"]
    acted = _wait(
        lambda: next((a["action"] for a in store.alerts() if a["id"] == alert_id and a["action"]),
                     None), budget_s,
    )  # fmt: skip
    acted_at = time.monotonic()
    ok = load.first_ok_after(acted_at, budget_s)
    inject(fault_file, None)
    end = ok or time.monotonic()
    # healed: nothing fails in the 10 s after the recovery
    time.sleep(10)
    after = load.failed_between(end + 0.5, end + 10.5) if ok else None
    first_failure = next((t for t, s in load.log if t >= start and s != 200), None)
    return {
        "detect_s": round(detected - start, 1),
        "recover_s": None if ok is None else round(ok - start, 1),
        "failed": load.failed_between(start, end),
        "failed_after_recovery_10s": after,
        "first_failure_s": None if first_failure is None else round(first_failure - start, 1),
        "action": acted,
        "version": manager.get("bench").version,
        "new_version_ready_s": None if serving is None else round(serving, 1),
    }


def _bad_version(manager: Any, load: Any, mode: str, budget_s: float) -> dict[str, Any]:
    """``faulty:4`` (20% of its batches fail) released on every replica (``release``), or
    as a canary on 10% of the traffic (``canary``). A rule as an operator would write it,
    ``error_rate > 0.05`` for 2 s with ``rollback`` within 300 s of a release, rolls the
    release back, and stops the canary (a rollback of a canary), the main version serving
    on untouched. Healed: the release rolled back and ready again, or the canary gone."""
    from lepton.platform.deployments._alerts import AlertRule

    store = manager.aiops.store
    if "broken" not in {r.name for r in store.rules()}:
        # only this rule judges the two, so they compare the same thing: the restart of
        # "errors" would race its rollback, and "slow" would judge a canary's first
        # seconds (a fresh process on a busy box) on its handful of requests
        for other in ("errors", "slow"):
            store.delete_rule(other)
        store.add_rule(AlertRule(name="broken", metric="error_rate", threshold=0.05, window_s=5,
                                 for_s=2, severity="critical", action="rollback", within_s=300,
                                 cooldown_s=30))  # fmt: skip
    if not _wait(lambda: not store.firing() and manager.get("bench").state == "ready", budget_s):
        return {"error": f"alerts still firing before the release: {store.firing()}"}
    time.sleep(3)
    before = manager.get("bench")
    start, wall = time.monotonic(), time.time()
    if mode == "canary":
        manager.canaries.start("bench", BROKEN, share=0.1, promote_after_s=3600, user="release")
        healed = lambda: manager.canaries.of("bench") is None  # noqa: E731
    else:
        manager.healer.release("bench", BROKEN, "release")
        healed = lambda: (v := manager.get("bench")).version != 4 and v.state == "ready"  # noqa: E731
    fired = _wait(
        lambda: [a for a in store.alerts() if a["rule"] == "broken" and a["started_at"] >= wall],
        budget_s,
    )
    if not fired:
        return {"detect_s": None, "failed": load.failed_between(start, time.monotonic()),
                "action": f"no 'broken' alert within {budget_s:.0f} s"}  # fmt: skip
    done = _wait(healed, budget_s)
    end = time.monotonic()
    time.sleep(10)
    after = manager.get("bench")
    return {
        "detect_s": round(fired[-1]["started_at"] - wall, 1),
        "recover_s": round(end - start, 1) if done else None,
        "failed": load.failed_between(start, end),
        "failed_after_recovery_10s": load.failed_between(end + 0.5, end + 10.5),
        "action": next((a["action"] for a in store.alerts() if a["id"] == fired[-1]["id"]), None),
        "version": after.version,
        "main_restarted": after.pid != before.pid,
        "alerted_on": fired[-1]["deployment"],
    }


def _remediations(db: Any, since: float) -> int:
    """Remediations the rules took since ``since`` (epoch): the audit log's ``aiops``."""
    from sqlalchemy import func, select

    from lepton.storage.schema import AuditRow

    with db.session() as s:
        query = select(func.count()).where(AuditRow.actor == "aiops", AuditRow.at >= since)
        return int(s.scalar(query) or 0)


def _table(results: dict[str, Any]) -> None:
    print("\nfault      | detect s | recover s | failed requests | action taken")
    print("-----------|----------|-----------|-----------------|-------------")
    for fault in RULE_OF:
        r = results.get(fault)
        if r is None:
            continue
        print(f"{fault:<10} | {r.get('detect_s')!s:>8} | {r.get('recover_s')!s:>9} | "
              f"{r.get('failed')!s:>15} | {r.get('action')}")  # fmt: skip
    clean = results.get("clean")
    if clean:
        print(f"clean {clean['seconds']:.0f} s: {clean['requests']} requests, "
              f"{clean['failed']} failed, {clean['alerts']} alerts, "
              f"{clean['remediations']} remediations, {clean['anomalies']} anomalies")  # fmt: skip


if __name__ == "__main__":
    main()
