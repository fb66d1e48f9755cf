"""Prediction logging: a real service app writing real JSON Lines segments, read back;
sampling, PII fields left out, bounded on disk, never blocking a request."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

import lepton as lp
from helpers import run_app
from lepton.platform.deployments._aiops import _large
from lepton.platform.deployments._drift_watch import DriftWatch
from lepton.serve import Service
from lepton.serve._predlog import (
    ENV,
    PredictionLog,
    PredictionLogConfig,
    read_predictions,
    scrub,
)


class Scorer(Service):
    @lp.handler
    def predict(self, inputs: list[float], name: str = "", email: str = "") -> dict[str, Any]:
        return {"score": sum(inputs)}


@pytest.fixture(autouse=True)
def _single_process_metrics(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)


def _config(folder: Path, **values: Any) -> PredictionLogConfig:
    return PredictionLogConfig(dir=str(folder), **values)


def test_a_service_logs_its_inputs_and_outputs_without_the_pii_fields(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _config(tmp_path / "log", rate=1.0, exclude=["name", "email"])
    monkeypatch.setenv(ENV, config.model_dump_json())

    async def scenario(client: httpx.AsyncClient, app: Any) -> None:
        for i in range(5):
            body = {"inputs": [i, 1.0], "name": "Ada Lovelace", "email": "ada@example.org"}
            answer = await client.post("/predict", json=body)
            assert answer.status_code == 200
        assert (await client.post("/predict", json={"inputs": "x"})).status_code == 422
        app.predlog.flush()

    run_app(Scorer(), scenario)
    rows = read_predictions(tmp_path / "log", limit=10)
    assert len(rows) == 5  # the refused request is not a prediction
    assert [r["outputs"]["score"] for r in rows] == [5.0, 4.0, 3.0, 2.0, 1.0]  # newest first
    assert all(r["route"] == "/predict" for r in rows)
    assert all(set(r["inputs"]) == {"inputs"} for r in rows)
    assert "Ada" not in "".join(p.read_text() for p in (tmp_path / "log").glob("*.jsonl"))


def test_sampling_rate_zero_logs_nothing_and_a_half_logs_about_half(tmp_path: Path) -> None:
    off = PredictionLog(_config(tmp_path / "off", rate=0.0))
    half = PredictionLog(_config(tmp_path / "half", rate=0.5))
    for _ in range(2000):
        off.offer("/predict", b'{"inputs": [1]}', b"{}")
        half.offer("/predict", b'{"inputs": [1]}', b"{}")
    off.close()
    half.close()
    assert off.written == 0
    assert read_predictions(tmp_path / "off") == []
    assert 850 < half.written < 1150


def test_the_log_stays_within_its_bytes_and_rows(tmp_path: Path) -> None:
    folder = tmp_path / "log"
    writer = PredictionLog(
        _config(folder, rate=1.0, max_bytes=64 * 1024, segment_rows=50, retention_rows=10_000)
    )
    payload = json.dumps({"inputs": [0.5] * 40}).encode()
    for _ in range(3000):
        writer.offer("/predict", payload, b'{"score": 1}')  # a queue of 10,000: none dropped
    writer.close()
    total = sum(p.stat().st_size for p in folder.glob("*.jsonl"))
    segment = max(p.stat().st_size for p in folder.glob("*.jsonl"))
    assert writer.written == 3000
    assert total <= 64 * 1024 + segment  # the bound, plus the segment being written
    assert len(read_predictions(folder, limit=10_000)) < 3000  # the oldest were removed

    rows = PredictionLog(_config(tmp_path / "rows", rate=1.0, segment_rows=10, retention_rows=30))
    for _ in range(200):
        rows.offer("/predict", b'{"inputs": [1]}', b"{}")
    rows.close()
    assert len(read_predictions(tmp_path / "rows", limit=1000)) <= 40


def test_a_full_queue_drops_records_instead_of_blocking(tmp_path: Path) -> None:
    writer = PredictionLog(_config(tmp_path, rate=1.0), queue_size=1)
    began = time.perf_counter()
    for _ in range(5000):
        writer.offer("/predict", b'{"inputs": [1]}', b"{}")
    elapsed = time.perf_counter() - began
    writer.close()
    assert writer.dropped > 0
    assert writer.dropped + writer.written == 5000
    assert elapsed < 5.0  # 5,000 offers never waited on the disk


def test_scrub_and_a_bad_environment_value(monkeypatch: pytest.MonkeyPatch) -> None:
    nested = {"inputs": [{"ssn": "1", "age": 3}], "ssn": "2"}
    assert scrub(nested, frozenset({"ssn"})) == {"inputs": [{"age": 3}]}
    monkeypatch.setenv(ENV, '{"rate": 7}')
    assert PredictionLog.from_env() is None  # logged; the replica still serves
    monkeypatch.delenv(ENV)
    assert PredictionLog.from_env() is None


def test_drift_of_logged_inputs_against_the_training_data_in_the_lineage(
    tmp_path: Path,
) -> None:
    train = lp.data.load("iris", split="train")
    lineage = {"dataset": {"name": "iris", "rows": len(train), "fingerprint": train.fingerprint()}}
    writer = PredictionLog(_config(tmp_path / "predictions", rate=1.0))
    test = lp.data.load("iris", split="test").features.tolist()
    for row in test:  # 30 real rows, one request each
        writer.offer("/predict", json.dumps({"inputs": row}).encode(), b'{"label": 0}')
    writer.close()
    watch = DriftWatch(window=30, min_rows=20)
    watch.check("iris", "iris-mlp:1", lineage, tmp_path)
    same = watch.report("iris")
    assert same is not None
    assert same["reference"] == "iris (train, 120 rows)"
    assert same["current_rows"] == 30
    assert [f["name"] for f in same["features"]] == ["x0", "x1", "x2", "x3"]

    batch = PredictionLog(_config(tmp_path / "predictions", rate=1.0))
    shifted = [[3 * v + 5 for v in row] for row in test]
    batch.offer("/predict", json.dumps({"inputs": shifted}).encode(), b"{}")  # one batch
    batch.close()
    watch.check("iris", "iris-mlp:1", lineage, tmp_path)
    moved = watch.report("iris")
    assert moved is not None
    assert moved["drifted"] is True

    watch.check("other", "other:1", {"dataset": None}, tmp_path)
    report = watch.report("other")
    assert report is not None
    assert "records no training dataset" in report["error"]


def test_only_large_changes_count_as_anomalies() -> None:
    assert not _large(12.0, 10.0, 5.0)  # a wobble
    assert not _large(9.0, 4.0, 5.0)  # doubled, but under the floor
    assert _large(40.0, 10.0, 5.0)
    assert _large(0.0, 10.0, 1.0)  # a drop counts too
