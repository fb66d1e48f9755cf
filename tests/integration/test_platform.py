"""The platform end to end, through HTTP only: users and tokens, a training job on real
MNIST, registration, a deployment, predictions and metrics; then the faults (``kill -9``
of the server while a job runs and while a version registers) and hostile requests."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from servers import LEPTON, Platform, kill_leftovers, ok, start_platform, stop_platform

import lepton as lp

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ENDED = ("succeeded", "failed", "cancelled", "lost")


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    home = Path(os.environ["LEPTON_HOME"])
    yield home
    kill_leftovers(home)


def _wait(client: httpx.Client, path: str, done: Any, timeout: float = 240) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = ok(client.get(path))
        if done(found):
            return found
        assert time.monotonic() < deadline, f"{path} still {found}"
        time.sleep(0.3)


def _train(epochs: int = 2, limit: int = 2048, **extra: Any) -> dict[str, Any]:
    return {
        "spec": {
            "kind": "train",
            "model": "mlp",
            "data": "mnist",
            "epochs": epochs,
            "batch_size": 64,
            "limit": limit,
            **extra,
        }
    }


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_the_whole_flow_through_the_public_api(
    backend: str, home: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if backend == "postgresql":  # the server, its jobs and its deployments all on it
        from postgres import create_database

        url = create_database(request.getfixturevalue("postgres_server_url"), "platform_flow")
        request.getfixturevalue("monkeypatch").setenv("LEPTON_DATABASE_URL", url)
    server = start_platform(home, tmp_path)
    try:
        _flow(server)
        _second_server_refused(server, home)
        assert (home / "lepton.db").exists() == (backend == "sqlite")
    finally:
        stop_platform(server, home)
    # Stopped cleanly, it gave the lease back: the next server starts without a check.
    stop_platform(start_platform(home, tmp_path), home)


def _second_server_refused(server: Platform, home: Path) -> None:
    # A second server on the same home would adopt, restart and requeue what the first
    # one runs: it is refused, with who holds the database, and changes nothing.
    with server.client() as admin:
        before = ok(admin.get("/api/v1/deployments"))["total"], admin.get("/api/v1/jobs").json()
    second = subprocess.run(
        [LEPTON, "server", "--port", "1"], capture_output=True, text=True, timeout=120,
        env={**os.environ, "LEPTON_HOME": str(home)},
    )  # fmt: skip
    assert second.returncode == 2, second.stderr
    assert "already manages the jobs and deployments" in second.stderr
    assert server.url in second.stderr
    assert "Traceback" not in second.stderr
    with server.client() as admin:
        after = ok(admin.get("/api/v1/deployments"))["total"], admin.get("/api/v1/jobs").json()
    assert after == before


def _flow(server: Platform) -> None:
    with server.client() as admin:
        dana = ok(admin.post("/api/v1/users", json={"name": "dana", "role": "editor"}), 201)
        token = ok(admin.post(f"/api/v1/users/{dana['id']}/tokens", json={"name": "laptop"}), 201)[
            "secret"
        ]
        vic = ok(admin.post("/api/v1/users", json={"name": "vic", "role": "viewer"}), 201)
        viewer = ok(admin.post(f"/api/v1/users/{vic['id']}/tokens", json={"name": "t"}), 201)
    with server.client(viewer["secret"]) as client:
        assert client.post("/api/v1/jobs", json=_train()).status_code == 403

    with server.client(token) as client:
        job = ok(client.post("/api/v1/jobs", json=_train()), 201)
        assert job["state"] == "queued"
        assert job["created_by"] == "dana"
        job = _wait(client, f"/api/v1/jobs/{job['id']}", lambda j: j["state"] in ENDED)
        assert job["state"] == "succeeded", job
        log = ok(client.get(f"/api/v1/jobs/{job['id']}/logs"))
        assert log["finished"]
        assert "epoch" in log["text"].lower()
        tail = ok(client.get(f"/api/v1/jobs/{job['id']}/logs?offset={log['next_offset']}"))
        assert tail["text"] == ""
        assert job["run_id"] is not None
        curves = ok(client.get(f"/api/v1/runs/{job['run_id']}/metrics"))
        assert len(curves["train_loss"]) == 2  # one point per epoch
        assert len(curves["val_loss"]) == 2

        version = ok(client.post("/api/v1/models/digits/versions", json={"job_id": job["id"]}), 201)
        assert version["ref"] == "digits:1"
        assert version["state"] == "ready"
        assert version["manifest"]["dataset"]["name"] == "mnist"

        created = ok(
            client.post("/api/v1/deployments", json={"name": "digits", "model": "digits:1"}), 201
        )
        assert created["version"] == 1
        _wait(client, "/api/v1/deployments/digits", lambda d: d["state"] == "ready", 120)

        test = lp.data.load("mnist", split="test")
        images = torch.stack([test[i][0] for i in range(8)])
        model = lp.load_model("digits:1").eval()
        with torch.no_grad():
            expected = model(images).argmax(1).tolist()
        labels = []
        for image in images:
            answer = ok(
                client.post("/api/v1/deployments/digits/predict", json={"inputs": image.tolist()})
            )
            labels.append(int(answer["label"]))
        assert labels == expected
        metrics = _wait(
            client,
            "/api/v1/deployments/digits/metrics",
            lambda m: m["requests_total"] >= 8,
            30,
        )
        assert metrics["errors_total"] == 0
        assert metrics["latency_ms_p50"] > 0
        ok(client.delete("/api/v1/deployments/digits"))

    with server.client() as admin:
        audit = ok(admin.get("/api/v1/audit?actor=dana&limit=100"))["items"]
        actions = {e["action"] for e in audit}
        assert {
            "POST /api/v1/jobs",
            "POST /api/v1/models/{name}/versions",
            "POST /api/v1/deployments",
            "DELETE /api/v1/deployments/{name}",
        } <= actions
        assert all(e["action"] != "POST /api/v1/deployments/{name}/predict" for e in audit)


def test_jobs_cannot_run_commands_and_hostile_input_is_refused(home: Path, tmp_path: Path) -> None:
    server = start_platform(home, tmp_path)
    try:
        with server.client() as client:
            hostile = [
                {"spec": {"kind": "shell", "command": "rm -rf /"}},
                {"spec": {"kind": "train", "model": "mlp; rm -rf /", "data": "mnist"}},
                {"spec": {"kind": "train", "data": "../../etc/passwd"}},
                {"spec": {"kind": "train", "command": "id"}},
                {"spec": {"kind": "train"}, "command": "id"},
            ]
            for body in hostile:
                answer = client.post("/api/v1/jobs", json=body)
                assert answer.status_code in (400, 422), (body, answer.text)
                assert answer.json()["error"]["code"] in ("invalid_request", "job_error")
            assert ok(client.get("/api/v1/jobs"))["total"] == 0
            for path in (
                "/api/v1/datasets/..%2F..%2Fetc%2Fpasswd",
                "/api/v1/models/..%2Fsecrets/versions",
                "/api/v1/jobs/1/logs?offset=-5",
                "/api/v1/deployments/..%2Fx",
            ):
                answer = client.get(path)
                assert 400 <= answer.status_code < 500, (path, answer.text)
            big = client.post(
                "/api/v1/models/big/versions/onnx",
                content=b"\0" * (300 * 1024 * 1024),
                headers={"Content-Type": "application/octet-stream"},
            )
            assert big.status_code == 413
            assert ok(client.get("/api/v1/models"))["total"] == 0
        # A job that outgrows the memory it reserved is stopped, fails, is not retried,
        # and `lepton jobs train -f` says why and exits 1.
        greedy = subprocess.run(
            [LEPTON, "jobs", "train", "--model", "mlp", "--data", "digits", "--epochs", "500",
             "--memory-mb", "64", "--follow"],
            capture_output=True, text=True, timeout=120,
            env={**os.environ, "LEPTON_HOME": str(home), "LEPTON_SERVER_URL": server.url},
        )  # fmt: skip
        assert greedy.returncode == 1, greedy.stdout + greedy.stderr
        out = " ".join(greedy.stdout.split())  # rich wraps long lines
        assert "more than the 64 MiB the job reserved" in out
        assert "peak memory" in out
        with server.client() as client:
            [job] = ok(client.get("/api/v1/jobs"))["items"]
            assert (job["state"], job["attempts"]) == ("failed", 1)
        # `lepton jobs submit` takes any kind's JSON spec; the server checks it by kind.
        env = {**os.environ, "LEPTON_HOME": str(home), "LEPTON_SERVER_URL": server.url}
        for spec, code, says in (
            ("{not json", 2, "the spec is not JSON"),
            ('{"kind": "compress", "model": "m:1", "quantize": null}', 2, "nothing to do"),
            ('{"kind": "compress", "model": "no-such:1", "data": "digits"}', 1,
             "no ready model version matches 'no-such:1'"),
        ):  # fmt: skip
            done = subprocess.run(
                [LEPTON, "jobs", "submit", spec, "--follow"],
                capture_output=True, text=True, timeout=120, env=env,
            )  # fmt: skip
            assert done.returncode == code, done.stdout + done.stderr
            assert says in " ".join((done.stdout + done.stderr).split()), done
    finally:
        stop_platform(server, home)


def test_kill_9_of_the_server_while_a_job_runs_loses_nothing(home: Path, tmp_path: Path) -> None:
    server = start_platform(home, tmp_path)
    with server.client() as client:
        job = ok(client.post("/api/v1/jobs", json=_train(epochs=4, limit=4096)), 201)
        _wait(client, f"/api/v1/jobs/{job['id']}", lambda j: j["state"] == "running", 60)
        _wait(client, f"/api/v1/jobs/{job['id']}/logs", lambda c: "epoch" in c["text"], 120)
    os.killpg(server.process.pid, signal.SIGKILL)  # the server, not the job's own session
    server.process.wait()
    pid = _job_pid(home, job["id"])
    assert pid is not None
    assert _alive(pid), "the job died with the server"

    server = start_platform(home, tmp_path)
    try:
        with server.client() as client:
            found = ok(client.get(f"/api/v1/jobs/{job['id']}"))
            assert found["state"] in ("running", "succeeded"), found  # adopted, never lost
            done = _wait(client, f"/api/v1/jobs/{job['id']}", lambda j: j["state"] in ENDED)
            assert done["state"] == "succeeded", done
            assert done["attempts"] <= 1, done  # it ran once: adopted, not restarted
    finally:
        stop_platform(server, home)


def test_kill_9_while_a_version_registers_leaves_nothing_pending(
    home: Path, tmp_path: Path
) -> None:
    server = start_platform(home, tmp_path)
    big = {"hidden": [4096, 4096, 2048]}  # ~30M parameters: registering takes a moment
    with server.client() as client:
        job = ok(client.post("/api/v1/jobs", json=_train(epochs=1, limit=256, config=big)), 201)
        job = _wait(client, f"/api/v1/jobs/{job['id']}", lambda j: j["state"] in ENDED)
        assert job["state"] == "succeeded", job

    def register() -> None:
        with contextlib.suppress(httpx.HTTPError):  # the server dies under it
            server.client().post("/api/v1/models/big/versions", json={"job_id": job["id"]})

    threading.Thread(target=register, daemon=True).start()
    deadline = time.monotonic() + 60
    while _version_states(home) != ["pending"]:
        assert time.monotonic() < deadline, _version_states(home)
        time.sleep(0.002)
    os.killpg(server.process.pid, signal.SIGKILL)
    server.process.wait()
    assert _version_states(home) == ["pending"]

    server = start_platform(home, tmp_path)
    try:
        assert _version_states(home) == ["failed"]  # marked at start, not left pending
        with server.client() as client:
            assert client.get("/api/v1/models/big/versions/1").status_code == 404
            again = ok(client.post("/api/v1/models/big/versions", json={"job_id": job["id"]}), 201)
            assert again["ref"] == "big:2"
        model = lp.load_model("big:2")  # whole and hash-checked
        assert sum(p.numel() for p in model.parameters()) > 20_000_000
    finally:
        stop_platform(server, home)


def _version_states(home: Path) -> list[str]:
    with sqlite3.connect(home / "lepton.db", timeout=30) as conn:
        return [r[0] for r in conn.execute("SELECT state FROM model_versions ORDER BY id")]


def _job_pid(home: Path, job_id: int) -> int | None:
    import json

    with sqlite3.connect(home / "lepton.db", timeout=30) as conn:
        (handle,) = conn.execute("SELECT handle FROM jobs WHERE id = ?", (job_id,)).fetchone()
    pid = (json.loads(handle) if isinstance(handle, str) else handle or {}).get("pid")
    return int(pid) if pid else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
