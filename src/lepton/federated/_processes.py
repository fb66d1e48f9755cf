"""A real federation on this machine: one Flower SuperLink and N SuperNodes as separate
processes, and ``flwr run`` submitting the app to the SuperLink.

Every process is started in its own session (``setsid``: its own process group, so the
ServerApp/ClientApp subprocesses Flower spawns go with it) and stopped by process group
in a ``finally``: nothing outlives the call. Everything listens on 127.0.0.1 only and runs
``--insecure`` (plain gRPC/HTTP, no TLS): fine on loopback, not off it (see
docs/federated.md). Telemetry and Flower's update check are off; Flower's home folder is
inside the job folder, so the user's ``~/.flwr`` is never touched. Apps are never
installed at run time (``--disable-runtime-dependency-installation``): the SuperNodes
use this environment's Lepton.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack, suppress
from pathlib import Path

from lepton.errors import FederatedError, FederationTimeoutError
from lepton.federated._job import JOB_ENV, Job

__all__ = ["Federation", "flower_env"]

_APP_TOML = """[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "lepton-federated"
version = "1.0.0"
dependencies = []

[tool.hatch.build.targets.wheel]
packages = ["."]

[tool.flwr.app]
publisher = "lepton"

[tool.flwr.app.components]
serverapp = "lepton.federated.{apps}server_app"
clientapp = "lepton.federated.{apps}client_app"

[tool.flwr.app.config]
job-dir = "{job}"
"""


def flower_env(job: Path) -> dict[str, str]:
    """The environment of every Flower process: no telemetry, no update check, one torch
    thread per process (N clients share the cores), Flower's home in the job folder."""
    env = dict(os.environ)
    env.update(
        FLWR_TELEMETRY_ENABLED="0", FLWR_DISABLE_UPDATE_CHECK="1", FLWR_HOME=str(job / "flwr"),
        PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
        OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", LEPTON_NUM_THREADS="1",
        **{JOB_ENV: str(job)},
    )  # fmt: skip
    return env


def _free_ports(n: int) -> list[int]:
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def _bin(name: str) -> str:
    path = Path(sys.executable).parent / name
    if not path.exists():
        raise FederatedError(
            f"{name} is not installed next to {sys.executable}; pip install 'lepton[federated]'"
        )
    return str(path)


class Federation:
    """The processes of one federation; a context manager that always stops them all.

    Attributes:
        supernodes: The SuperNode processes, client ``i`` at index ``i`` (a test may kill
            one to see the federation carry on).
    """

    def __init__(self, job: Job, *, startup_timeout: float = 60.0) -> None:
        self.job = job
        self.folder = job.path
        self.env = flower_env(self.folder)
        self.startup_timeout = startup_timeout
        self.superlink: subprocess.Popen[bytes] | None = None
        self.supernodes: list[subprocess.Popen[bytes]] = []
        self._stack = ExitStack()
        # Flower 1.41 serves the Fleet, Control and Runtime APIs on one HTTP port
        self.http, *self.node_ports = _free_ports(1 + job.n_clients)

    def _spawn(self, args: list[str], log: str) -> subprocess.Popen[bytes]:
        out = self._stack.enter_context((self.folder / log).open("ab"))
        return subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            env=self.env, cwd=self.folder, start_new_session=True,  # setsid
        )  # fmt: skip

    def __enter__(self) -> Federation:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _start(self) -> None:
        (self.folder / "flwr").mkdir(parents=True, exist_ok=True)
        (self.folder / "flwr" / "config.toml").write_text(
            '[superlink]\ndefault = "lepton"\n\n[superlink.lepton]\n'
            f'address = "127.0.0.1:{self.http}"\ninsecure = true\n'
        )
        app = self.folder / "app"
        app.mkdir(exist_ok=True)
        (app / "pyproject.toml").write_text(_APP_TOML.format(job=self.folder, apps=_apps(self.job)))
        self.superlink = self._spawn(
            [_bin("flower-superlink"), "--insecure", "--isolation", "subprocess",
             "--database", str(self.folder / "superlink.db"),
             "--host", "127.0.0.1", "--port", str(self.http),
             "--disable-runtime-dependency-installation"],
            "superlink.log",
        )  # fmt: skip
        self._wait_port(self.http, self.superlink, "superlink.log")
        for i, port in enumerate(self.node_ports):
            self.supernodes.append(
                self._spawn(
                    [
                        _bin("flower-supernode"),
                        "--insecure",
                        "--superlink",
                        f"127.0.0.1:{self.http}",
                        "--node-config",
                        f"partition-id={i} num-partitions={self.job.n_clients}",
                        "--isolation",
                        "subprocess",
                        "--host",
                        "127.0.0.1",
                        "--port",
                        str(port),
                    ],
                    f"supernode-{i}.log",
                )
            )

    def _wait_port(self, port: int, proc: subprocess.Popen[bytes], log: str) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise FederatedError(f"a Flower process exited at start; see {self.folder / log}")
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    return
            time.sleep(0.2)
        raise FederationTimeoutError(
            f"the SuperLink did not listen within {self.startup_timeout:.0f} s; see "
            f"{self.folder / log}"
        )

    def submit(self) -> None:
        """``flwr run`` the app on this federation (returns once the run is submitted)."""
        done = subprocess.run(
            [_bin("flwr"), "run", str(self.folder / "app"), "lepton"],
            env=self.env, cwd=self.folder, capture_output=True, text=True, timeout=120,
            start_new_session=True,
        )  # fmt: skip
        (self.folder / "flwr-run.log").write_text(done.stdout + done.stderr)
        if done.returncode != 0:
            raise FederatedError(
                f"`flwr run` failed ({done.returncode}); see {self.folder / 'flwr-run.log'}"
            )

    def wait(self, timeout: float, poll: Callable[[], None] | None = None) -> None:
        """Wait for the ServerApp's ``done.json``, calling ``poll`` between checks."""
        deadline = time.monotonic() + timeout
        done = self.folder / "done.json"
        while not done.exists():
            if poll is not None:
                poll()
            if self.superlink is not None and self.superlink.poll() is not None:
                raise FederatedError(
                    f"the SuperLink exited ({self.superlink.returncode}); see "
                    f"{self.folder / 'superlink.log'}"
                )
            if time.monotonic() > deadline:
                raise FederationTimeoutError(
                    f"the federation did not finish within {timeout:.0f} s; see the logs in "
                    f"{self.folder}; raise timeout= or lower min_available"
                )
            time.sleep(0.5)
        if poll is not None:
            poll()

    def stop(self) -> None:
        """SIGTERM every process group, SIGKILL what is left after 10 s, reap them all.

        Flower starts its SuperExec helpers in sessions of their own, so the groups of
        every descendant are signalled too, not only those of the processes started here.
        """
        procs = [p for p in [*self.supernodes, self.superlink] if p is not None]
        groups = {p.pid for p in procs} | _descendant_groups({p.pid for p in procs})
        groups.discard(os.getpgrp())
        for sig, grace in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
            groups |= _descendant_groups(groups) - {os.getpgrp()}
            for g in groups:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(g, sig)  # pgid == pid of a process started with setsid
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline and any(_group_alive(g) for g in groups):
                for p in procs:
                    p.poll()
                time.sleep(0.1)
            if not any(_group_alive(g) for g in groups):
                break
        for p in procs:
            with suppress(subprocess.TimeoutExpired):
                p.wait(timeout=5)
        self._stack.close()


def _descendant_groups(roots: set[int]) -> set[int]:
    """Process groups of every live descendant of ``roots`` (read from /proc)."""
    parent: dict[int, tuple[int, int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parent[int(entry.name)] = (int(fields[1]), int(fields[2]))  # ppid, pgrp
    found: set[int] = set()
    frontier = set(roots)
    while frontier:
        children = {pid for pid, (ppid, _) in parent.items() if ppid in frontier}
        children -= found
        found |= children
        frontier = children
    return {parent[pid][1] for pid in found}


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _apps(job: Job) -> str:
    """Where the job's Flower apps are: ``module:prefix`` of ``server_app``/``client_app``."""
    return "_secagg:secure_" if job.secure_aggregation else "_flower:"
