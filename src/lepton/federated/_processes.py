"""A real federation on this machine: one Flower SuperLink and N SuperNodes as separate
processes, and ``flwr run`` submitting the app to the SuperLink.

Every process is started in its own session (``setsid``: its own process group, so the
ServerApp/ClientApp subprocesses Flower spawns go with it) and stopped by process group
in a ``finally``: nothing outlives the call. By default the SuperLink listens on
127.0.0.1 and runs ``--insecure`` (plain HTTP, no TLS): fine on loopback, not off it.
With ``tls`` it serves TLS (``--ssl-ca-certfile/--ssl-certfile/--ssl-keyfile``; the
SuperNodes and ``flwr`` trust the CA), and with ``node_auth`` it runs
``--enable-supernode-auth``: each SuperNode's public key is registered (``flwr supernode
register``) before the node starts with its private key, and a node whose key was not
registered is refused (:mod:`lepton.federated._tls`). A bind address off loopback
without TLS is refused before anything starts. Each SuperNode's own Runtime API (what
its ClientApp processes talk to) stays on 127.0.0.1. Telemetry and Flower's update
check are off; Flower's home folder is inside the job folder, so the user's ``~/.flwr``
is never touched. Apps are never installed at run time
(``--disable-runtime-dependency-installation``): the SuperNodes use this environment's
Lepton.
"""

from __future__ import annotations

import contextlib
import json
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
from lepton.federated._tls import (
    NodeKey,
    TlsFiles,
    TlsOption,
    check_transport,
    dial_host,
    make_node_keys,
    resolve_tls,
)

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

    Args:
        job: The job folder's settings.
        startup_timeout: Seconds the SuperLink may take to listen.
        host: The SuperLink's bind address (default: loopback only).
        tls: ``None``/``False`` (plain, loopback only), ``True`` (a throwaway CA in the
            job folder's ``tls/``) or the user's files (:class:`TlsFiles` or a mapping
            with ``ca``, ``cert`` and ``key``).
        node_auth: Flower's SuperNode authentication (needs ``tls``).

    Attributes:
        supernodes: The SuperNode processes, client ``i`` at index ``i`` (a test may kill
            one to see the federation carry on).
        tls: The TLS files in use (None: plain HTTP).
        node_keys, node_ids: Each SuperNode's key pair and registered node id
            (``node_auth``).

    Raises:
        InsecureFederationError: ``host`` is off loopback and ``tls`` is off (raised by
            the constructor: nothing has started).
    """

    def __init__(
        self, job: Job, *, startup_timeout: float = 60.0, host: str = "127.0.0.1",
        tls: TlsOption = None, node_auth: bool = False,
    ) -> None:  # fmt: skip
        check_transport(host, tls, node_auth)  # before anything starts
        self.job = job
        self.folder = job.path
        self.env = flower_env(self.folder)
        self.startup_timeout = startup_timeout
        self.host = host
        self.address = dial_host(host)  # where the SuperNodes and `flwr` reach it
        self._tls_option = tls
        self.tls: TlsFiles | None = None
        self.node_auth = node_auth
        self.node_keys: list[NodeKey] = []
        self.node_ids: list[int] = []
        self.superlink: subprocess.Popen[bytes] | None = None
        self.supernodes: list[subprocess.Popen[bytes]] = []
        self.extra_nodes: list[subprocess.Popen[bytes]] = []
        self._logs: dict[int, Path] = {}
        self._stack = ExitStack()
        # Flower 1.41 serves the Fleet, Control and Runtime APIs on one HTTP port
        self.http, *self.node_ports = _free_ports(1 + job.n_clients)

    def _spawn(self, args: list[str], log: str) -> subprocess.Popen[bytes]:
        out = self._stack.enter_context((self.folder / log).open("ab"))
        proc = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            env=self.env, cwd=self.folder, start_new_session=True,  # setsid
        )  # fmt: skip
        self._logs[proc.pid] = self.folder / log
        return proc

    def why_stopped(self, node: subprocess.Popen[bytes]) -> str | None:
        """None while ``node`` (a SuperNode) runs; else one line saying why it stopped,
        read from Flower's log of it."""
        if node.poll() is None:
            return None
        log = self._logs.get(node.pid)
        text = log.read_text(errors="replace") if log is not None and log.exists() else ""
        where = f"{self.address}:{self.http}"
        for marker, reason in (
            ("CERTIFICATE_VERIFY_FAILED", "does not trust the SuperLink's TLS certificate "
             f"(it trusts another CA, or the certificate does not name {where})"),
            ("Failed to activate SuperNode", "was refused by the SuperLink: its key is not "
             "registered (SuperNode authentication is on)"),
            ("handshake", "failed the TLS handshake with the SuperLink"),
        ):  # fmt: skip
            if marker in text:
                return f"SuperNode (pid {node.pid}) {reason}; see {log}"
        return f"SuperNode (pid {node.pid}) exited ({node.returncode}); see {log}"

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
        self.tls = resolve_tls(self._tls_option, self.host, self.folder / "tls")
        transport = f'root-certificates = "{self.tls.ca}"\n' if self.tls else "insecure = true\n"
        (self.folder / "flwr" / "config.toml").write_text(
            '[superlink]\ndefault = "lepton"\n\n[superlink.lepton]\n'
            f'address = "{self.address}:{self.http}"\n{transport}'
        )
        app = self.folder / "app"
        app.mkdir(exist_ok=True)
        (app / "pyproject.toml").write_text(_APP_TOML.format(job=self.folder, apps=_apps(self.job)))
        secure = (
            ["--ssl-ca-certfile", str(self.tls.ca), "--ssl-certfile", str(self.tls.cert),
             "--ssl-keyfile", str(self.tls.key)]
            if self.tls else ["--insecure"]
        )  # fmt: skip
        self.superlink = self._spawn(
            [_bin("flower-superlink"), *secure, "--isolation", "subprocess",
             *(["--enable-supernode-auth"] if self.node_auth else []),
             "--database", str(self.folder / "superlink.db"),
             "--host", self.host, "--port", str(self.http),
             "--disable-runtime-dependency-installation"],
            "superlink.log",
        )  # fmt: skip
        self._wait_port(self.http, self.superlink, "superlink.log")
        if self.node_auth:
            self.node_keys = make_node_keys(self.folder / "keys", self.job.n_clients)
            self.node_ids = [self.register(key.public) for key in self.node_keys]
        for i, port in enumerate(self.node_ports):
            key = self.node_keys[i].private if self.node_auth else None
            self.supernodes.append(self.start_supernode(i, port=port, key=key))

    def start_supernode(
        self, partition: int, *, port: int | None = None, key: Path | None = None,
        root_certificates: Path | None = None, log: str | None = None,
    ) -> subprocess.Popen[bytes]:  # fmt: skip
        """Start one SuperNode for client ``partition`` (stopped with the federation).

        Args:
            partition: The client's partition id.
            port: Its Runtime API port on 127.0.0.1 (default: a free one).
            key: Its private key for node authentication (default: none).
            root_certificates: The CA it trusts (default: this federation's CA, if TLS).
            log: Its log file in the job folder (default: ``supernode-<partition>.log``).

        Without ``port`` it is an extra node, kept in ``extra_nodes`` rather than
        ``supernodes`` (e.g. a test's rogue node); :meth:`why_stopped` says why one
        stopped.
        """
        ca = root_certificates or (self.tls.ca if self.tls else None)
        secure = ["--root-certificates", str(ca)] if ca else ["--insecure"]
        proc = self._spawn(
            [_bin("flower-supernode"), *secure,
             *(["--auth-supernode-private-key", str(key)] if key else []),
             "--superlink", f"{self.address}:{self.http}",
             "--node-config", f"partition-id={partition} num-partitions={self.job.n_clients}",
             "--isolation", "subprocess",
             "--host", "127.0.0.1", "--port", str(port or _free_ports(1)[0])],
            log or f"supernode-{partition}.log",
        )  # fmt: skip
        if port is None:
            self.extra_nodes.append(proc)
        return proc

    def register(self, public_key: Path) -> int:
        """Register a SuperNode's public key with the SuperLink (``flwr supernode
        register``); returns its node id."""
        done = self._flwr(["supernode", "register", str(public_key), "lepton", "--format",
                           "json"], "flwr-register.log")  # fmt: skip
        try:
            return int(json.loads(done[done.index("{") :])["node-id"])
        except (ValueError, KeyError):
            raise FederatedError(
                f"`flwr supernode register` answered no node id; see "
                f"{self.folder / 'flwr-register.log'}"
            ) from None

    def registered(self) -> list[dict[str, object]]:
        """The SuperLink's nodes (``flwr supernode ls --format json``)."""
        out = self._flwr(["supernode", "ls", "lepton", "--format", "json"], "flwr-ls.log")
        try:
            nodes = json.loads(out[out.index("{") :]).get("nodes", [])
        except ValueError:
            raise FederatedError(
                f"`flwr supernode ls` answered no JSON; see {self.folder / 'flwr-ls.log'}"
            ) from None
        return [dict(n) for n in nodes]

    def _flwr(self, args: list[str], log: str) -> str:
        done = subprocess.run(
            [_bin("flwr"), *args], env=self.env, cwd=self.folder, capture_output=True,
            text=True, timeout=120, start_new_session=True,
        )  # fmt: skip
        with (self.folder / log).open("a") as f:
            f.write(done.stdout + done.stderr)
        if done.returncode != 0:
            raise FederatedError(
                f"`flwr {' '.join(args[:2])}` failed ({done.returncode}); see {self.folder / log}"
            )
        return done.stdout

    def _wait_port(self, port: int, proc: subprocess.Popen[bytes], log: str) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise FederatedError(f"a Flower process exited at start; see {self.folder / log}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection((self.address.strip("[]"), port), timeout=1),
            ):
                return
            time.sleep(0.2)
        raise FederationTimeoutError(
            f"the SuperLink did not listen within {self.startup_timeout:.0f} s; see "
            f"{self.folder / log}"
        )

    def submit(self) -> None:
        """``flwr run`` the app on this federation (returns once the run is submitted)."""
        self._flwr(["run", str(self.folder / "app"), "lepton"], "flwr-run.log")

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
            stopped = [w for w in map(self.why_stopped, self.supernodes) if w is not None]
            if len(self.supernodes) - len(stopped) < self.job.min_available:
                raise FederatedError(
                    f"{len(stopped)} of the {len(self.supernodes)} SuperNodes stopped and the "
                    f"run needs {self.job.min_available} (min_available): " + "; ".join(stopped)
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
        every = [*self.supernodes, *self.extra_nodes, self.superlink]
        procs = [p for p in every if p is not None]
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
