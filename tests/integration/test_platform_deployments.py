"""Deployments managed by the platform server: real `lepton deploy` supervisors on
127.0.0.1, a real SQLite database, a small MLP trained on real iris rows.

One deployment is reused across the lifecycle (create, predict, metrics, crash, scale,
server restart, stop) so the file starts as few processes as two cores allow.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import stat
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch

import lepton as lp
from lepton import registry
from lepton.errors import ConflictError, DeploymentError, NotFoundError
from lepton.platform._procs import proc_stat
from lepton.platform.deployments._canary import CanaryRequest
from lepton.platform.deployments._manager import DeploymentManager, DeploymentRequest
from lepton.storage import Database

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def iris_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, torch.nn.Module]]:
    """An MLP fit for one epoch on the real iris training split, registered as production."""
    home = tmp_path_factory.mktemp("deployments-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LEPTON_HOME", str(home))
        train = lp.data.load("iris", split="train")
        model = lp.models.MLP(in_features=4, num_classes=3, hidden=[16])
        lp.fit(model, train, epochs=1, batch_size=32, quiet=True, seed=0)
        lp.register(model, "iris-mlp", dataset=train)
        registry.set_stage("iris-mlp:1", "production")
        yield home, model.eval()


@pytest.fixture
def home(iris_home: tuple[Path, torch.nn.Module], monkeypatch: pytest.MonkeyPatch) -> Path:
    """The home, absolute. The server runs from its parent folder with a relative
    ``LEPTON_HOME`` and database path: deployments run in folders of their own, so they
    must not depend on the server's working directory."""
    monkeypatch.chdir(iris_home[0].parent)
    monkeypatch.setenv("LEPTON_HOME", iris_home[0].name)
    return iris_home[0]


@pytest.fixture
def db(home: Path) -> Iterator[Database]:
    database = Database(f"sqlite:///{home.name}/lepton.db")  # relative to the server's cwd
    database.check()
    yield database
    database.dispose()


@pytest.fixture
def managers(db: Database, home: Path) -> Iterator[Callable[[], DeploymentManager]]:
    """New managers on the same database (each one a server start); all cleaned up."""
    made: list[DeploymentManager] = []

    def make() -> DeploymentManager:
        # A new supervisor takes seconds to bind its port on an idle machine, but half a
        # minute on a busy two-core one: the proxy waits that long rather than failing.
        manager = DeploymentManager(
            db, Path(home.name), port_range=(_free_port(), 65000), proxy_wait_s=120
        )
        made.append(manager)
        return manager

    yield make
    pids: set[int] = set()
    for manager in made:
        manager.stop_monitor()
        pids |= {rt.pid for rt in manager._runtimes.all() if rt.pid is not None}
    for view in made[-1].list(0, 100)[0] if made else []:
        made[-1].delete(view.name, "test")
    for pid in pids:  # anything a failing test left behind
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _until(
    manager: DeploymentManager, name: str, check: Callable[[Any], bool], timeout: float = 180
) -> Any:
    """Tick the manager until ``check(view)`` holds (a generous deadline: replicas
    importing torch on a busy two-core machine take a minute to be ready)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        manager.tick()
        view = manager.get(name)
        if check(view):
            return view
        time.sleep(0.1)
    raise AssertionError(f"timed out; last {manager.get(name)}\n{manager.log_tail(name)}")


def _predict(
    manager: DeploymentManager, name: str, rows: list[list[float]]
) -> list[tuple[int, Any]]:
    async def run() -> list[tuple[int, Any]]:
        try:
            answers = []
            for row in rows:
                body = json.dumps({"inputs": row}).encode()
                status, kind, payload = await manager.predict(name, body, "application/json")
                assert kind.startswith("application/json")
                answers.append((status, json.loads(payload)))
            return answers
        finally:
            await manager.aclose()

    return asyncio.run(run())


@contextlib.contextmanager
def _traffic(manager: DeploymentManager, name: str, row: list[float]) -> Iterator[list[int]]:
    """Predict through the proxy in a background thread while the block runs."""
    statuses: list[int] = []
    done = threading.Event()
    body = json.dumps({"inputs": row}).encode()

    async def run() -> None:
        try:
            while not done.is_set():
                status, _, _ = await manager.predict(name, body, "application/json")
                statuses.append(status)
                await asyncio.sleep(0.05)
        finally:
            await manager.aclose()

    thread = threading.Thread(target=asyncio.run, args=(run(),))
    thread.start()
    try:
        yield statuses
    finally:
        done.set()
        thread.join(timeout=300)


def _replicas(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def _until_exited(pid: int, timeout: float = 10) -> None:
    """Wait until ``pid`` has ended (a zombie, or gone): a SIGKILL lands asynchronously,
    and a process tearing down a large address space takes a while to die."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stat = proc_stat(pid)
        if stat is None or stat.state in ("Z", "X"):
            return
        time.sleep(0.01)
    raise AssertionError(f"process {pid} still runs {timeout} s after SIGKILL")


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_a_deployment_lives_through_crashes_scaling_and_server_restarts(
    home: Path,
    iris_home: tuple[Path, torch.nn.Module],
    managers: Callable[[], DeploymentManager],
) -> None:
    model = iris_home[1]
    x = lp.data.load("iris", split="test").features[:6]
    manager = managers()
    view = manager.create(DeploymentRequest(name="iris", model="iris-mlp@production"), "ada")
    assert (view.ref, view.model_ref, view.state, view.desired) == (
        "iris-mlp:1", "iris-mlp@production", "starting", "running",
    )  # fmt: skip
    folder = home / "deployments" / "iris"
    token_file = folder / "token"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    token = token_file.read_text()
    # The supervisor runs in the deployment's private folder, not the server's cwd.
    assert view.pid is not None
    assert Path(os.readlink(f"/proc/{view.pid}/cwd")) == folder
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700

    # Ready, and answers through the proxy exactly like the local model.
    view = _until(manager, "iris", lambda v: v.state == "ready")
    answers = _predict(manager, "iris", x.tolist())
    assert [status for status, _ in answers] == [200] * len(x), answers
    with torch.inference_mode():
        expected = model(x).softmax(dim=1)
    got = torch.tensor([a["probabilities"] for _, a in answers])
    assert torch.allclose(got, expected, atol=1e-5)

    # Live metrics: N more predictions and one unauthorized call, nothing else counted.
    manager.tick()  # figures are as of the monitor's last scrape
    before = manager.metrics("iris")
    n = 7
    _predict(manager, "iris", x[:1].tolist() * n)
    direct = httpx.post(f"{view.url}/predict", json={"inputs": x[0].tolist()}, trust_env=False)
    assert direct.status_code == 401  # no token: other local programs cannot use it
    manager.tick()
    after = manager.metrics("iris")
    assert after["requests_total"] - before["requests_total"] == n + 1
    assert after["errors_total"] - before["errors_total"] == 1
    assert after["latency_ms_mean"] > 0
    assert 0 < after["latency_ms_p50"] <= after["latency_ms_p99"]
    assert after["rps"] > 0
    assert after["series"][-1]["rps"] > 0
    assert after["series"][-1]["errors"] == 1
    assert after["memory_mb"] > 10  # its supervisor and replica, read from /proc
    assert after["cpu_percent"] is not None  # between the two monitor rounds above
    assert 0 <= after["cpu_percent"] < 100 * (os.cpu_count() or 1)

    # Production moves to a new version: the running deployment keeps its pinned one.
    lp.register(model, "iris-mlp")
    registry.set_stage("iris-mlp:2", "production")

    # kill -9 of the supervisor: the monitor thread restarts it.
    first_pid = view.pid
    assert first_pid is not None
    os.kill(first_pid, signal.SIGKILL)
    manager.start_monitor(interval_s=0.2)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        view = manager.get("iris")
        if view.state == "ready" and view.pid != first_pid:
            break
        time.sleep(0.1)
    manager.stop_monitor()
    assert (view.state, view.restarts) == ("ready", 1), manager.log_tail("iris")
    assert "killed by SIGKILL" in (view.error or "")
    info = httpx.get(
        f"{view.url}/info", headers={"authorization": f"Bearer {token}"}, trust_env=False
    ).json()
    assert info["ref"] == "iris-mlp:1"
    assert [s for s, _ in _predict(manager, "iris", x[:2].tolist())] == [200, 200]

    # Scale to two replicas: a new supervisor with two replica processes. Requests
    # through the proxy during the switch wait for the new one instead of failing.
    with _traffic(manager, "iris", x[0].tolist()) as statuses:
        time.sleep(0.3)
        view = manager.scale("iris", 2, "ada")
        assert view.replicas == 2
        view = _until(manager, "iris", lambda v: v.state == "ready")
        time.sleep(0.3)
    assert len(statuses) > 4
    assert set(statuses) == {200}, statuses
    assert view.pid is not None
    assert len(_replicas(view.pid)) == 2
    assert view.restarts == 1  # scaling is not a crash

    # The server restarts: the new manager adopts the live supervisor as it is.
    manager.shutdown()
    adopter = managers()
    adopter.recover()
    adopted = adopter.get("iris")
    assert (adopted.pid, adopted.state, adopted.restarts) == (view.pid, "ready", 1)
    assert [s for s, _ in _predict(adopter, "iris", x[:1].tolist())] == [200]

    # The server dies, and so does the supervisor while it is down: restarted at start.
    adopter.shutdown()
    assert adopted.pid is not None
    os.kill(adopted.pid, signal.SIGKILL)
    _until_exited(adopted.pid)  # dead before the next server starts, as the scenario says
    restarter = managers()
    restarter.recover()
    view = _until(restarter, "iris", lambda v: v.state == "ready")
    assert view.pid != adopted.pid
    assert view.restarts == 2
    assert "had exited at server start" in (view.error or "")
    assert [s for s, _ in _predict(restarter, "iris", x[:1].tolist())] == [200]

    # Clear errors for a taken name, a taken port and an unknown model.
    with pytest.raises(ConflictError, match="already exists"):
        restarter.create(DeploymentRequest(name="iris", model="iris-mlp:1"), "ada")
    with pytest.raises(ConflictError, match=f"port {view.port} is in use by deployment 'iris'"):
        restarter.create(DeploymentRequest(name="other", model="iris-mlp:1", port=view.port), "ada")
    with pytest.raises(DeploymentError, match="no ready model version matches 'no-such-model'"):
        restarter.create(DeploymentRequest(name="other", model="no-such-model"), "ada")
    # ... and for canaries that cannot be: nothing is started, no record is written.
    canaries = restarter.canaries
    with pytest.raises(NotFoundError, match="has no canary; start one with POST"):
        canaries.get("iris")
    with pytest.raises(NotFoundError, match="no deployment named 'nope'"):
        canaries.start("nope", "2", share=0.1, promote_after_s=60, user="ada")
    with pytest.raises(DeploymentError, match="already serves iris-mlp:1"):
        canaries.start("iris", "1", share=0.1, promote_after_s=60, user="ada")
    with pytest.raises(DeploymentError, match="cannot deploy 'iris-mlp:9'"):
        canaries.start("iris", "9", share=0.1, promote_after_s=60, user="ada")
    with pytest.raises(DeploymentError, match=r"between 0 and 1, got 1\.5"):
        canaries.start("iris", "2", share=1.5, promote_after_s=60, user="ada")
    with pytest.raises(ValueError, match="less than 1"):
        CanaryRequest(model="2", share=1.0)
    assert canaries.of("iris") is None
    assert not (home / "deployments" / "iris" / "canary.json").exists()
    assert restarter.list(0, 10)[1] == 1

    # Stop: drained and gone, and stays stopped across a server start.
    pid = view.pid
    assert pid is not None
    stopped = restarter.stop("iris", "ada")
    assert (stopped.state, stopped.desired, stopped.pid) == ("stopped", "stopped", None)
    assert not _port_open(view.port)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    with pytest.raises(DeploymentError, match="is stopped; start it before a canary"):
        restarter.canaries.start("iris", "2", share=0.1, promote_after_s=60, user="ada")
    status, _, body = _predict_raw(restarter, "iris")
    assert status == 503
    assert json.loads(body)["error"]["code"] == "deployment_stopped"
    managers().recover()
    assert restarter.get("iris").state == "stopped"
    assert not _port_open(view.port)

    restarter.delete("iris", "ada")
    with pytest.raises(NotFoundError):
        restarter.get("iris")
    assert not (home / "deployments" / "iris").exists()


def _predict_raw(manager: DeploymentManager, name: str) -> tuple[int, str, bytes]:
    async def run() -> tuple[int, str, bytes]:
        try:
            return await manager.predict(name, b'{"inputs": [1, 2, 3, 4]}', "application/json")
        finally:
            await manager.aclose()

    return asyncio.run(run())


def test_requests_are_validated_with_messages_that_say_how() -> None:
    with pytest.raises(ValueError, match="1-63 characters of a-z"):
        DeploymentRequest(name="Bad_Name", model="m")
    with pytest.raises(ValueError, match="less than or equal to 16"):
        DeploymentRequest(name="ok", model="m", replicas=17)
    with pytest.raises(ValueError, match="Extra inputs"):
        DeploymentRequest.model_validate({"name": "ok", "model": "m", "shell": "rm -rf /"})


def test_latency_quantiles_come_from_the_histogram_buckets() -> None:
    from lepton.platform.deployments._metrics import quantile

    # 50 requests under 10 ms, 49 more under 100 ms, 1 under 1 s.
    buckets = {0.01: 50.0, 0.1: 99.0, 1.0: 100.0, float("inf"): 100.0}
    assert quantile(0.5, buckets) == pytest.approx(0.01)
    assert quantile(0.99, buckets) == pytest.approx(0.1)
    assert quantile(0.25, buckets) == pytest.approx(0.005)  # linear inside a bucket
    assert quantile(0.999, {0.5: 1.0, float("inf"): 2.0}) == 0.5  # past the last bound
    assert quantile(0.5, {0.01: 0.0, float("inf"): 0.0}) is None  # no requests yet


def test_an_adopted_process_history_is_counted_once_and_not_as_a_burst() -> None:
    from lepton.platform.deployments._metrics import Counters, Series

    series = Series(size=3)
    t = time.time()
    series.add(41, Counters(requests=1000, latency_sum=5.0, latency_count=1000), t, fresh=False)
    series.add(41, Counters(requests=1010, latency_sum=5.2, latency_count=1010), t + 1, fresh=False)
    figures = series.summary(window_s=60)
    assert figures["requests_total"] == 1010
    assert [point["rps"] for point in figures["series"]] == [0.0, pytest.approx(10.0)]
    assert figures["latency_ms_mean"] == pytest.approx(20.0)  # 0.2 s over 10 requests
    # A restarted process starts from zero: its counts add up, nothing goes negative.
    series.add(42, Counters(requests=4, latency_sum=0.04, latency_count=4), t + 2, fresh=True)
    assert series.summary(window_s=60)["requests_total"] == 1014
    assert len(series.summary(window_s=60)["series"]) == 3
