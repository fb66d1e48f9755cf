"""The AIOps loop's state in the metadata database (SQLite and PostgreSQL): anomalies,
their counts and drift reports written, seen by a new AIOps / DriftWatch over the same
database (a server restart), bounded per deployment, and never half-written."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import lepton as lp
from lepton.platform.deployments._aiops_state import AIOpsState, json_safe
from lepton.platform.deployments._drift_watch import DriftWatch
from lepton.platform.deployments._manager import DeploymentManager
from lepton.serve._predlog import PredictionLog, PredictionLogConfig
from lepton.storage import Database


def _anomaly(t: float, series: str = "latency_ms_p95", value: float = 90.0) -> dict[str, Any]:
    return {"t": t, "series": series, "value": value, "typical": 10.0, "score": 7.5}


def test_anomalies_and_counts_are_seen_by_the_next_server(db: Database, tmp_path: Path) -> None:
    first = DeploymentManager(db, tmp_path)
    first.aiops.state.add_anomaly("iris", _anomaly(1.0), {"latency_ms_p95": 1})
    first.aiops.state.add_anomaly("iris", _anomaly(2.0, "error_rate", 0.4),
                                  {"latency_ms_p95": 1, "error_rate": 1})  # fmt: skip
    first.aiops.state.add_anomaly("other", _anomaly(3.0), {"latency_ms_p95": 1})

    again = DeploymentManager(db, tmp_path)  # what `lepton server` builds on its next start
    assert [a["t"] for a in again.aiops.anomalies("iris")] == [1.0, 2.0]
    assert again.aiops.anomalies("iris")[1]["series"] == "error_rate"
    assert [a["t"] for a in again.aiops.anomalies("other")] == [3.0]
    text = again.aiops.exposition().decode()
    assert 'lepton_anomalies{deployment="iris",series="error_rate"} 1.0' in text

    again.aiops.forget("iris")  # a deleted deployment leaves nothing behind
    assert DeploymentManager(db, tmp_path).aiops.anomalies("iris") == []
    assert [a["t"] for a in DeploymentManager(db, tmp_path).aiops.anomalies("other")] == [3.0]


def test_retention_keeps_the_newest_rows_of_each_deployment(db: Database) -> None:
    state = AIOpsState(db, keep_anomalies=5, keep_reports=3)
    for i in range(12):
        state.add_anomaly("iris", _anomaly(float(i)), {"latency_ms_p95": i + 1})
        state.add_report("iris", {"deployment": "iris", "at": float(i), "drifted": i % 2 == 0})
    state.add_anomaly("other", _anomaly(99.0), {"rps": 1})
    found, counts = state.anomalies()["iris"]
    assert [a["t"] for a in found] == [7.0, 8.0, 9.0, 10.0, 11.0]
    assert counts == {"latency_ms_p95": 12}  # the counts are totals, not the kept rows
    assert [r["at"] for r in state.reports()["iris"]] == [9.0, 10.0, 11.0]
    assert [a["t"] for a in state.anomalies()["other"][0]] == [99.0]  # not pruned by iris


def test_a_failure_mid_write_leaves_the_previous_state(db: Database) -> None:
    state = AIOpsState(db)
    state.add_anomaly("iris", _anomaly(1.0), {"latency_ms_p95": 1})
    broken = {**_anomaly(2.0), "detail": object()}  # not JSON: fails after the counts' delete
    with pytest.raises(Exception, match="not JSON serializable"):
        state.add_anomaly("iris", broken, {"latency_ms_p95": 2})
    found, counts = state.anomalies()["iris"]
    assert [a["t"] for a in found] == [1.0]
    assert counts == {"latency_ms_p95": 1}


def test_drift_reports_survive_and_are_json_safe(db: Database, tmp_path: Path) -> None:
    train = lp.data.load("iris", split="train")
    lineage = {"dataset": {"name": "iris", "fingerprint": train.fingerprint()}}
    writer = PredictionLog(PredictionLogConfig(dir=str(tmp_path / "predictions"), rate=1.0))
    for row in lp.data.load("iris", split="test").features.tolist():
        writer.offer("/predict", json.dumps({"inputs": [3 * v + 5 for v in row]}).encode(), b"{}")
    writer.close()
    watch = DriftWatch(window=30, min_rows=20)
    watch.attach(AIOpsState(db))
    watch.check("iris", "iris-mlp:1", lineage, tmp_path)
    report = watch.report("iris")
    assert report is not None
    assert report["drifted"] is True

    restarted = DriftWatch()
    assert restarted.report("iris") is None
    restarted.attach(AIOpsState(db))
    assert restarted.report("iris") == json_safe(report)
    assert restarted.reports()["iris"]["drifted"] is True
    assert json_safe({"a": np.float32(1.5), "b": [float("nan")], "c": np.int64(3)}) == {
        "a": 1.5, "b": [None], "c": 3,
    }  # fmt: skip
    assert time.time() >= restarted.reports()["iris"]["at"]


def test_drift_history_is_the_stored_reports_newest_first_in_brief(
    db: Database, tmp_path: Path
) -> None:
    train = lp.data.load("iris", split="train")
    lineage = {"dataset": {"name": "iris", "fingerprint": train.fingerprint()}}
    writer = PredictionLog(PredictionLogConfig(dir=str(tmp_path / "predictions"), rate=1.0))
    logged = lp.data.load("iris", split="test").features.tolist()
    for row in logged:  # the last feature moved
        writer.offer("/predict", json.dumps({"inputs": [*row[:3], row[3] + 3]}).encode(), b"{}")
    writer.close()
    watch = DriftWatch(window=45, min_rows=20)
    watch.attach(AIOpsState(db, keep_reports=3))
    watch.check("iris", "iris-mlp:1", lineage, tmp_path)
    full = watch.report("iris")
    assert full is not None
    watch.check("iris", "iris-mlp:2", {}, tmp_path)  # no lineage: a report without verdict
    watch.check("iris", "iris-mlp:1", lineage, tmp_path)

    newest, unknown, oldest = watch.history("iris")
    assert [r.version for r in (newest, unknown, oldest)] == ["iris-mlp:1", "iris-mlp:2",
                                                              "iris-mlp:1"]  # fmt: skip
    assert newest.at >= unknown.at >= oldest.at
    assert unknown.drifted is None
    assert unknown.share_drifted is None
    assert unknown.top == []
    assert unknown.error is not None
    assert "records no training dataset" in unknown.error
    assert oldest.drifted is True
    assert oldest.features == len(full["features"]) == 4
    assert oldest.drifted_features == len(full["drifted_features"])
    assert oldest.share_drifted == len(full["drifted_features"]) / 4
    assert oldest.top[0].name == "x3"
    assert oldest.top[0].drifted
    drifted_first = [(not f.drifted, -(f.statistic or 0)) for f in oldest.top]
    assert drifted_first == sorted(drifted_first)
    assert (oldest.current_rows, oldest.reference_rows) == (len(logged), len(train))
    assert oldest.reference is not None
    assert oldest.reference.startswith("iris (train")
    assert [r.version for r in watch.history("iris", limit=1)] == ["iris-mlp:1"]

    watch.check("iris", "iris-mlp:2", {}, tmp_path)  # the database keeps the newest 3
    assert [r.error is None for r in watch.history("iris")] == [False, True, False]
    assert watch.history("other") == []
    alone = DriftWatch(window=45, min_rows=20)  # no database: only the last report
    alone.check("iris", "iris-mlp:1", lineage, tmp_path)
    assert [r.drifted for r in alone.history("iris")] == [True]
