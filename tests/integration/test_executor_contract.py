"""The executor contract (start, poll, cancel, adopt, memory), one suite run over every
executor: :class:`LocalExecutor` (subprocesses) and :class:`RayExecutor` (actors on a
real two-node Ray cluster started for this module, see ``tests/ray_cluster.py``).

The workers are small Python scripts (real processes that start in milliseconds), given
to the executor as its worker command, the way the real worker is; the last test runs a
real train job through ``lepton server --executor ray``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from servers import free_port, kill_leftovers, ok, wait_ready

from helpers import wait_until
from lepton.config import get_settings
from lepton.platform.jobs._executor import Capacity, Executor, ExitStatus, LocalExecutor
from lepton.platform.jobs._scheduler import JobManager
from lepton.platform.jobs._specs import JobRequest, JobView, TrainJob
from lepton.storage import Database
from ray_cluster import RayCluster, ray_cluster

pytestmark = pytest.mark.integration

# Upper bounds, generous for a shared box under load (a quiet one takes a second or two):
# how long a worker may take to start (a Ray actor, then Python), and to stop.
STARTS_S = 90
STOPS_S = 30

PRELUDE = """\
import json, os, signal, sys, time

def finish(**result):
    with open("result.json.tmp", "w") as f:
        json.dump({"ok": True, **result}, f)
    os.replace("result.json.tmp", "result.json")

print("worker of job", sys.argv[-1], "pid", os.getpid(), flush=True)
"""

SLEEPER = """
child = os.fork()
if child == 0:  # a grandchild in the same process group
    time.sleep(60)
    os._exit(0)
with open("child.txt.tmp", "w") as f:  # whole or absent: the test reads it once it exists
    f.write(str(child))
os.replace("child.txt.tmp", "child.txt")
time.sleep(60)
"""

GROWER = """
child = os.fork()  # a child that touches memory of its own: the whole group is counted
block = bytearray(150 * 2**20)
for i in range(0, len(block), 4096):
    block[i] = 1
open("grown.txt" if child else "child-grown.txt", "w").close()
time.sleep(60)
"""


@pytest.fixture(scope="module")
def ray_address() -> Iterator[str]:
    """A real Ray cluster for the module: a head with 2 CPUs and a worker node with 1."""
    ray = pytest.importorskip("ray", reason="the Ray executor needs pip install 'lepton[ray]'")
    cluster: RayCluster
    with ray_cluster(head_cpus=2, worker_cpus=1) as cluster:
        try:
            yield cluster.address
        finally:
            ray.shutdown()  # this process's driver, before its cluster goes


@dataclass
class Engine:
    """Builds executors of one kind, in this process or in a child process that exits
    (a server that is gone: what a restarted server finds)."""

    kind: str
    address: str | None
    tmp: Path
    started: list[tuple[Executor, dict[str, Any]]] = field(default_factory=list)

    def make(self, body: str) -> Executor:
        executor = self._build(self.script(body))
        start = executor.start

        def tracked(*args: Any, **kwargs: Any) -> dict[str, Any]:
            handle = start(*args, **kwargs)
            self.started.append((executor, handle))
            return handle

        executor.start = tracked  # type: ignore[method-assign]
        return executor

    def stop_leftovers(self) -> None:
        """Cancel whatever a failing test left running: on the shared Ray cluster a
        leftover would hold its CPUs and starve the next test."""
        for executor, handle in self.started:
            with suppress(Exception):
                if executor.poll(handle) is None:
                    executor.cancel(handle, force=True)
                    until_ended(executor, handle)

    def script(self, body: str) -> tuple[str, ...]:
        path = self.tmp / f"worker_{abs(hash(body))}.py"
        path.write_text(PRELUDE + textwrap.dedent(body))
        return (sys.executable, str(path))

    def _build(self, worker: Sequence[str]) -> Executor:
        if self.kind == "local":
            return LocalExecutor(worker=worker)
        from lepton.platform.jobs._ray import RayExecutor

        return RayExecutor(self.address, worker=worker)

    def start_elsewhere(self, body: str, job_id: int, workdir: Path) -> dict[str, Any]:
        """Start a worker from another process, which then exits; returns its handle."""
        code = textwrap.dedent(f"""
            import json, sys
            from pathlib import Path
            from lepton.platform.jobs._executor import LocalExecutor
            worker = {list(self.script(body))!r}
            if {self.kind!r} == "local":
                executor = LocalExecutor(worker=worker)
            else:
                from lepton.platform.jobs._ray import RayExecutor
                executor = RayExecutor({self.address!r}, worker=worker)
            handle = executor.start({job_id}, {{}}, Path({str(workdir)!r}), {{}})
            print(json.dumps(handle))
        """)
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
        )
        assert out.returncode == 0, out.stderr
        handle: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
        adopter = self._build(self.script(body))
        if adopter.adopt(handle):
            self.started.append((adopter, handle))
        return handle

    def forged(self, handle: dict[str, Any]) -> list[dict[str, Any]]:
        """Handles that look like ``handle`` but are not its worker."""
        garbage: list[dict[str, Any]] = [{}, {"pid": "1; rm -rf /", "actor": "x; rm -rf /"}]
        if self.kind == "local":
            return [*garbage, {**handle, "start_time": handle["start_time"] + 1},
                    {**handle, "host": "another-host"}]  # fmt: skip
        return [*garbage, {**handle, "token": "0" * 12},
                {**handle, "job_id": handle["job_id"] + 1}]  # fmt: skip


# the Ray side shares one cluster for the module, whose start alone takes 20-60 s
@pytest.fixture(params=["local", pytest.param("ray", marks=pytest.mark.slow)])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    address = request.getfixturevalue("ray_address") if request.param == "ray" else None
    made = Engine(request.param, address, tmp_path)
    yield made
    made.stop_leftovers()


@pytest.fixture
def ray_engine(ray_address: str, tmp_path: Path) -> Iterator[Engine]:
    made = Engine("ray", ray_address, tmp_path)
    yield made
    made.stop_leftovers()


def until_ended(executor: Executor, handle: dict[str, Any], timeout: float = STOPS_S) -> ExitStatus:
    status = wait_until(lambda: executor.poll(handle), timeout, interval=0.05,
                        message="the worker did not end")  # fmt: skip
    assert isinstance(status, ExitStatus)
    return status


def pid_gone(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat[stat.rindex(")") + 2] in "ZX"


def manager_for(db: Database, executor: Executor) -> JobManager:
    return JobManager(db, get_settings().home, executor, Capacity(1, 0, 4096), backoff_s=0.05)


def run_job(manager: JobManager, **request: Any) -> JobView:
    job = manager.submit(JobRequest(spec=TrainJob(model="mlp"), **request), "alice")

    def ended() -> JobView | None:
        manager.tick()
        view = manager.get(job.id)
        return view if view.state in ("succeeded", "failed", "cancelled", "lost") else None

    return wait_until(ended, STARTS_S, interval=0.05, message=lambda: manager.logs(job.id)[0])


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Iterator[Database]:
    database = Database(f"sqlite:///{tmp_path / 'jobs.db'}")
    database.upgrade()
    yield database
    database.dispose()


# -- the contract -----------------------------------------------------------------------
def test_a_job_that_succeeds_reports_its_result_and_its_whole_log(
    engine: Engine, sqlite_db: Database
):
    body = """
    print("token", os.environ.get("LEPTON_HOME", "-")[-12:], flush=True)
    for i in range(30_000):  # 3 MB: more than one pull of the Ray executor
        print(f"{i:08d}" + "x" * 91)
    finish(answer=42)
    """
    manager = manager_for(sqlite_db, engine.make(body))
    view = run_job(manager)
    log = (manager.jobs_dir / str(view.id) / "log.txt").read_text()
    assert view.state == "succeeded", log
    assert view.result == {"ok": True, "answer": 42}
    assert (view.attempts, view.error) == (1, None)
    assert f"worker of job {view.id}" in log
    assert f"token {str(get_settings().home)[-12:]}" in log, "the job's env reached the worker"
    lines = [ln for ln in log.splitlines() if ln.endswith("x" * 91)]
    assert [int(ln[:8]) for ln in lines] == list(range(30_000)), "every line, once, in order"


def test_a_job_that_fails_carries_its_error(engine: Engine, sqlite_db: Database):
    body = """
    print("about to fail", flush=True)
    with open("result.json", "w") as f:
        json.dump({"ok": False, "deterministic": True, "error": "bad spec: fix the model"}, f)
    sys.exit(3)
    """
    manager = manager_for(sqlite_db, engine.make(body))
    view = run_job(manager, max_retries=2)
    log = (manager.jobs_dir / str(view.id) / "log.txt").read_text()
    assert view.state == "failed", log
    assert view.error == "bad spec: fix the model"
    assert view.attempts == 1, "a deterministic failure is not retried"
    assert "about to fail" in log

    crash = engine.make("raise ValueError('the worker crashed here')")
    handle = crash.start(2, {}, engine.tmp / "crash", {})
    assert until_ended(crash, handle) == ExitStatus(code=1)
    assert "ValueError: the worker crashed here" in (engine.tmp / "crash" / "log.txt").read_text()


def test_cancel_stops_the_worker_and_its_children_within_seconds(engine: Engine):
    executor, workdir = engine.make(SLEEPER), engine.tmp / "job"
    handle = executor.start(1, {"kind": "train"}, workdir, {"LEPTON_X": "1"})
    handle = json.loads(json.dumps(handle))  # JSON-safe: it is stored in the database
    wait_until(lambda: (workdir / "child.txt").exists(), STARTS_S)
    grandchild = int((workdir / "child.txt").read_text())
    assert executor.poll(handle) is None
    asked = time.monotonic()
    executor.cancel(handle, force=False)
    assert until_ended(executor, handle, timeout=STOPS_S) == ExitStatus(signal=signal.SIGTERM)
    wait_until(lambda: pid_gone(grandchild), STOPS_S, message="cancel reaches the whole group")
    assert time.monotonic() - asked < STOPS_S
    assert "worker of job 1" in (workdir / "log.txt").read_text()
    executor.cancel(handle, force=True)  # an ended worker is left alone, no error
    assert executor.poll(handle) is not None, "still ended"


def test_a_fresh_executor_adopts_a_worker_another_process_started(engine: Engine):
    workdir = engine.tmp / "job"
    handle = engine.start_elsewhere(SLEEPER, 2, workdir)  # that "server" has exited
    fresh = engine.make(SLEEPER)
    assert fresh.adopt(handle)
    assert fresh.poll(handle) is None
    for forged in engine.forged(handle):
        assert not fresh.adopt(forged), forged
    wait_until(lambda: (workdir / "child.txt").exists(), STARTS_S)
    assert fresh.memory_mb(handle) is not None
    fresh.cancel(handle, force=True)  # works on a worker it did not start
    status = until_ended(fresh, handle, timeout=STOPS_S)
    # a local worker that is not our child ends with an unknown status; Ray's actor knows
    assert status in (ExitStatus(), ExitStatus(signal=signal.SIGKILL))
    assert not fresh.adopt(handle)
    grandchild = int((workdir / "child.txt").read_text())
    wait_until(lambda: pid_gone(grandchild), STOPS_S)
    assert "worker of job 2" in (workdir / "log.txt").read_text()


def test_memory_counts_the_worker_and_its_children(engine: Engine):
    executor, workdir = engine.make(GROWER), engine.tmp / "job"
    handle = executor.start(3, {}, workdir, {})
    wait_until(
        lambda: all((workdir / f).exists() for f in ("grown.txt", "child-grown.txt")), STARTS_S,
        message="the worker never grew",
    )  # fmt: skip
    used = executor.memory_mb(handle)
    assert used is not None
    assert 300 <= used < 600, used  # 2 x 150 MiB touched, plus two small interpreters
    executor.cancel(handle, force=True)
    until_ended(executor, handle, timeout=STOPS_S)
    assert executor.memory_mb(handle) is None


# -- Ray only: resources, placement -------------------------------------------------------
@pytest.mark.slow
def test_ray_reserves_the_jobs_cpus_on_the_cluster(ray_engine: Engine, tmp_path: Path):
    from lepton.platform.jobs._ray import RayExecutor

    executor = ray_engine.make(SLEEPER)
    assert isinstance(executor, RayExecutor)
    assert executor.capacity().cpus == 3, "both nodes counted"
    two = Capacity(cpus=2, gpus=0, memory_mb=64)
    first = executor.start(11, {}, tmp_path / "a", {}, two)
    wait_until(lambda: (tmp_path / "a" / "child.txt").exists(), STARTS_S)
    second = executor.start(12, {}, tmp_path / "b", {}, two)  # only the head has 2 CPUs
    for _ in range(20):
        assert executor.poll(second) is None
        time.sleep(0.1)
    assert not (tmp_path / "b" / "log.txt").exists(), "it waits for the head's CPUs"
    executor.cancel(first, force=True)
    until_ended(executor, first)
    wait_until(lambda: (tmp_path / "b" / "child.txt").exists(), STARTS_S,
               message="the second job starts once the first freed its CPUs")  # fmt: skip
    executor.cancel(second, force=False)
    assert until_ended(executor, second) == ExitStatus(signal=signal.SIGTERM)
    with pytest.raises(OSError, match="no node of the Ray cluster is large enough"):
        executor.start(13, {}, tmp_path / "c", {}, Capacity(cpus=3, gpus=0, memory_mb=64))


@pytest.mark.slow
def test_ray_an_actor_that_dies_takes_its_worker_and_its_error_reaches_the_job(
    ray_engine: Engine, tmp_path: Path
):
    import ray

    executor = ray_engine.make(SLEEPER)
    workdir = tmp_path / "job"
    handle = executor.start(21, {}, workdir, {})
    wait_until(lambda: (workdir / "child.txt").exists(), STARTS_S)
    assert executor.poll(handle) is None  # brings the log (with the pid) back through Ray
    pid = int(next(ln for ln in (workdir / "log.txt").read_text().splitlines()
                   if ln.startswith("worker of job")).split()[-1])  # fmt: skip
    ray.kill(ray.get_actor(handle["actor"], namespace=handle["namespace"]), no_restart=True)
    assert until_ended(executor, handle) == ExitStatus()
    wait_until(lambda: pid_gone(pid), STOPS_S, message="the worker dies with its actor")
    result = json.loads((workdir / "result.json").read_text())
    assert result["ok"] is False
    assert "its Ray actor died" in result["error"]
    assert "[ray] its Ray actor died" in (workdir / "log.txt").read_text()
    assert not executor.adopt(handle)


@pytest.mark.slow
def test_ray_missing_or_misnamed_is_a_clear_error(monkeypatch: pytest.MonkeyPatch):
    from lepton.errors import MissingExtraError
    from lepton.platform.jobs._ray import import_ray

    with monkeypatch.context() as patch:
        patch.setitem(sys.modules, "ray", None)  # what an install without the extra sees
        with pytest.raises(MissingExtraError, match=r"pip install 'lepton\[ray\]'"):
            import_ray()
    lepton = str(Path(sys.executable).parent / "lepton")
    for args, said in [
        (["--executor", "spark"], "--executor must be local or ray, got 'spark'"),
        (["--ray-address", "127.0.0.1:6379"], "only used with --executor ray"),
        (
            ["--executor", "ray", "--ray-address", f"127.0.0.1:{free_port()}"],
            "no Ray cluster answers at 127.0.0.1:",
        ),  # at once: Ray itself would retry for ever
    ]:
        out = subprocess.run([lepton, "server", *args], capture_output=True, text=True,
                             timeout=120, check=False,
                             env={**os.environ, "COLUMNS": "500"})  # fmt: skip
        assert out.returncode == 2, out.stderr
        assert said in out.stdout + out.stderr


# -- end to end: `lepton server --executor ray` -------------------------------------------
def start_server(home: Path, address: str, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    lepton = str(Path(sys.executable).parent / "lepton")
    with open(log, "ab") as out:
        server = subprocess.Popen(
            [lepton, "server", "--port", str(port), "--executor", "ray",
             "--ray-address", address],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, "LEPTON_HOME": str(home)},
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    wait_ready(url, server, log, timeout=120, path="/api/v1/health")
    return server, url


def stop_server(server: subprocess.Popen[bytes]) -> int:
    if server.poll() is None:
        server.send_signal(signal.SIGTERM)
    try:
        return server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        return server.wait()


@pytest.mark.slow
def test_the_server_runs_a_train_job_on_ray_and_a_restarted_one_adopts_it(
    ray_address: str, tmp_path: Path
):
    home, log = get_settings().home, tmp_path / "server.log"
    spec = {"kind": "train", "model": "mlp", "epochs": 4, "limit": 512, "seed": 0}
    server, url = start_server(home, ray_address, log)
    try:
        token = (home / "admin-token").read_text().strip()
        auth = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=url, headers=auth, timeout=30) as client:
            job = ok(client.post("/api/v1/jobs", json={"spec": spec, "cpus": 1}), 201)
        job_log = home / "jobs" / str(job["id"]) / "log.txt"
        wait_until(lambda: job_log.exists() and "epoch   1/4" in job_log.read_text(), 120,
                   interval=0.2, message=lambda: log.read_text())  # fmt: skip
        # the server goes (gracefully, then the re-raised signal, as a local one); the job
        # runs on in its detached actor
        assert stop_server(server) == -signal.SIGTERM, log.read_text()
        server, url = start_server(home, ray_address, log)
        with httpx.Client(base_url=url, headers=auth, timeout=30) as client:

            def ended() -> dict[str, Any] | None:
                view: dict[str, Any] = ok(client.get(f"/api/v1/jobs/{job['id']}"))
                return view if view["state"] in ("succeeded", "failed", "lost") else None

            view = wait_until(ended, 180, interval=0.5, message=lambda: log.read_text())
        text = job_log.read_text()
        assert view["state"] == "succeeded", text
        assert (view["executor"], view["attempts"]) == ("ray", 1), "adopted, not restarted"
        assert view["result"]["epochs"] == 4
        assert "a restarted server adopted the worker" in text
        assert "epoch   4/4" in text, "the log goes on after the restart"
        assert text.count("epoch   1/4") == 1, "each line once, across servers"
    finally:
        stop_server(server)
        kill_leftovers(home)
