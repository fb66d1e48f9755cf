"""Replicas: bind once, start N worker processes on the shared socket, keep them alive.

The supervisor binds the listening socket itself and hands it to each replica, so the
kernel queues connections for whichever replica accepts next and a replica that dies
loses nothing still waiting in the queue. A replica that crashes is restarted (with a
backoff); one that cannot start at all stops the service with its error. SIGTERM is
passed on to every replica, which drains; after the grace period they are killed.

Each replica runs in a fresh, empty, private working directory (removed when it exits),
so code that opens relative paths cannot read the launcher's files; what the launcher's
working directory decides (the service file, relative paths in the environment) is
resolved to absolute paths before a replica starts.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
import select
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lepton.errors import ConfigError
from lepton.serve._connections import ConnectionLimits
from lepton.serve._hosts import check_allowed_host

__all__ = ["ServeOptions", "Supervisor", "absolute_env", "is_loopback", "sweep_stale_dirs"]


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass
class ServeOptions:
    """How to serve: where, how many replicas, limits.

    Attributes:
        target: ``"app.py:Class"`` for a user's service; ``None`` with ``model``.
        model: A registry reference (``"name@production"``) to deploy.
        host: Bind address; anything but loopback needs ``token``.
        port: TCP port (0 picks a free one).
        replicas: Worker processes sharing the socket.
        token: Bearer token every request must carry (except health probes).
        max_body_bytes: Larger request bodies answer 413.
        grace_s: How long a draining replica waits for requests in progress.
        threads: Torch threads per replica (0: the cores divided among replicas).
        allowed_hosts: ``Host`` values accepted besides the bound address
            (``--allowed-host``: ``name``, ``name:port``, or ``*`` with a token).
        limits: Connection timeouts and the connection limit of each replica.
    """

    target: str | None = None
    model: str | None = None
    host: str = "127.0.0.1"
    port: int = 8100
    replicas: int = 1
    token: str | None = None
    max_body_bytes: int = 10 * 1024 * 1024
    grace_s: float = 30.0
    threads: int = 0
    allowed_hosts: list[str] = field(default_factory=list)
    limits: ConnectionLimits = field(default_factory=ConnectionLimits)

    def validate(self) -> None:
        """Refuse unsafe or impossible settings before anything binds."""
        if (self.target is None) == (self.model is None):
            raise ConfigError("serve either a Service (app.py:Class) or a model, not both")
        if self.replicas < 1:
            raise ConfigError("--replicas must be >= 1")
        if not 0 <= self.port <= 65535:
            raise ConfigError("--port must be in 0..65535")
        if self.max_body_bytes < 1:
            raise ConfigError("the body limit must be >= 1 byte")
        if not is_loopback(self.host) and not self.token:
            raise ConfigError(
                f"refusing to listen on {self.host} without an API token: anyone who can "
                f"reach it could use the model. Set LEPTON_SERVE_TOKEN (or --token-file), "
                f"or bind 127.0.0.1"
            )
        hosts = [check_allowed_host(h) for h in self.allowed_hosts]
        if "*" in hosts and not self.token:
            raise ConfigError(
                "--allowed-host '*' accepts any Host, which lets any web page reach a "
                "service without a token (DNS rebinding); set a token, or name the hosts"
            )


@dataclass
class _Replica:
    index: int
    process: subprocess.Popen[bytes]
    ready_fd: int
    started: float
    workdir: str
    ready: bool = False


@dataclass
class Supervisor:
    """Runs and watches the replicas of one service."""

    options: ServeOptions
    log: Any = field(default=None)
    restarts: int = 0
    _replicas: dict[int, _Replica] = field(default_factory=dict)
    _stopping: bool = False
    _sock: socket.socket | None = None
    _metrics_dir: str | None = None

    def _say(self, text: str) -> None:
        (self.log or (lambda t: print(t, file=sys.stderr, flush=True)))(text)

    def bind(self) -> socket.socket:
        """Bind and listen on the configured address."""
        opts = self.options
        family = socket.AF_INET6 if ":" in opts.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((opts.host, opts.port))
        except OSError as exc:
            sock.close()
            raise ConfigError(
                f"cannot listen on {opts.host}:{opts.port} ({exc.strerror}); pick another --port"
            ) from None
        sock.listen(2048)
        sock.set_inheritable(True)
        self._sock = sock
        return sock

    @property
    def url(self) -> str:
        assert self._sock is not None
        host, port = self._sock.getsockname()[:2]
        return f"http://{'[' + host + ']' if ':' in host else host}:{port}"

    def _spawn(self, index: int) -> _Replica:
        assert self._sock is not None
        assert self._metrics_dir is not None
        opts = self.options
        read_fd, write_fd = os.pipe()
        threads = opts.threads or max(1, (os.cpu_count() or 1) // opts.replicas)
        workdir = tempfile.mkdtemp(prefix=f"lepton-replica-{os.getpid()}-{index}-")  # 0700
        spec = {
            "target": opts.target, "model": opts.model, "fd": self._sock.fileno(),
            "ready_fd": write_fd, "max_body_bytes": opts.max_body_bytes, "grace_s": opts.grace_s,
            "threads": threads, "replica": index, "supervisor": os.getpid(),
            "allowed_hosts": opts.allowed_hosts, "limits": dataclasses.asdict(opts.limits),
            "workdir": workdir,
        }  # fmt: skip
        env = dict(absolute_env(os.environ), LEPTON_SERVE_SPEC=json.dumps(spec),
                   PROMETHEUS_MULTIPROC_DIR=self._metrics_dir)  # fmt: skip
        env.pop("LEPTON_SERVE_TOKEN", None)
        if opts.token:
            env["LEPTON_SERVE_TOKEN"] = opts.token
        try:
            process = subprocess.Popen(
                [sys.executable, "-m", "lepton.serve._worker"],
                pass_fds=(self._sock.fileno(), write_fd),
                env=env,
                cwd=workdir,
            )
        except OSError:
            os.close(read_fd)
            shutil.rmtree(workdir, ignore_errors=True)
            raise
        finally:
            os.close(write_fd)
        return _Replica(index, process, read_fd, time.monotonic(), workdir)

    def run(self) -> int:
        """Serve until SIGTERM/SIGINT; returns the exit status."""
        from lepton.serve._service import absolute_target
        from lepton.serve._worker import EXIT_CONFIG

        self.options.validate()
        if self.options.target is not None:  # replicas do not run in this directory
            self.options.target = absolute_target(self.options.target)
        self.bind()
        sweep_stale_dirs()
        self._metrics_dir = tempfile.mkdtemp(prefix=f"lepton-metrics-{os.getpid()}-")
        previous = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)
        }
        failures = 0
        announced = False
        backoff = 0.0
        try:
            for i in range(self.options.replicas):
                self._replicas[i] = self._spawn(i)
            while not self._stopping:
                self._watch_ready()
                if not announced and all(r.ready for r in self._replicas.values()):
                    announced = True
                    what = self.options.target or self.options.model
                    n = self.options.replicas
                    self._say(f"Serving {what} at {self.url} ({n} replica{'s' * (n > 1)} ready)")
                for index, replica in list(self._replicas.items()):
                    code = replica.process.poll()
                    if code is None or self._stopping:
                        continue
                    _close(replica)
                    self._mark_dead(replica.process.pid)
                    if code == EXIT_CONFIG:
                        self._say("a replica cannot start: see the error above")
                        return 2
                    failures = failures + 1 if not replica.ready else 0
                    if failures >= 3:
                        self._say(
                            f"replica {index} failed to start 3 times (exit {code}); stopping"
                        )
                        return 1
                    lived = time.monotonic() - replica.started
                    backoff = 0.1 if lived > 30 else min(5.0, max(0.1, backoff * 2))
                    self._say(
                        f"replica {index} exited ({_describe(code)}); restarting in {backoff:.1f}s"
                    )
                    time.sleep(backoff)
                    self.restarts += 1
                    self._replicas[index] = self._spawn(index)
            return 0
        finally:
            self._shutdown()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _on_signal(self, signum: int, frame: Any) -> None:
        self._stopping = True

    def _watch_ready(self) -> None:
        waiting = {
            r.ready_fd: r for r in self._replicas.values() if not r.ready and r.ready_fd >= 0
        }
        if not waiting:
            time.sleep(0.1)
            return
        try:
            readable, _, _ = select.select(list(waiting), [], [], 0.1)
        except InterruptedError:
            return
        for fd in readable:
            data = os.read(fd, 64)
            if data.startswith(b"ready"):
                waiting[fd].ready = True

    def _mark_dead(self, pid: int) -> None:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid, self._metrics_dir)  # type: ignore[no-untyped-call]

    def _shutdown(self) -> None:
        replicas = list(self._replicas.values())
        for r in replicas:
            if r.process.poll() is None:
                r.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.options.grace_s + 5
        for r in replicas:
            try:
                r.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                r.process.kill()
                r.process.wait()
            _close(r)
        if self._sock is not None:
            self._sock.close()
        if self._metrics_dir is not None:
            shutil.rmtree(self._metrics_dir, ignore_errors=True)


def _close(replica: _Replica) -> None:
    """Release what an exited replica leaves: its pipe and its working directory."""
    if replica.ready_fd >= 0:
        os.close(replica.ready_fd)
        replica.ready_fd = -1
    shutil.rmtree(replica.workdir, ignore_errors=True)


_OWN_PREFIXES = ("lepton-replica-", "lepton-metrics-")  # then the supervisor's pid
_STALE_S = 600.0  # a supervisor's replicas stop with it, within their grace period


def sweep_stale_dirs(root: str | None = None) -> list[Path]:
    """Remove the temporary folders a killed supervisor left (it cleans up after itself
    otherwise): its replicas' working directories and its metrics folder.

    Only this user's folders named with the pid of a process that is gone, and not
    touched for ten minutes, are removed. Returns them.
    """
    removed: list[Path] = []
    base = Path(root or tempfile.gettempdir())
    for prefix in _OWN_PREFIXES:
        for path in base.glob(f"{prefix}*"):
            pid = path.name[len(prefix) :].split("-", 1)[0]
            try:
                info = path.lstat()
            except OSError:
                continue
            if (not pid.isdigit() or not stat.S_ISDIR(info.st_mode)
                    or info.st_uid != os.getuid() or time.time() - info.st_mtime < _STALE_S
                    or _alive(int(pid))):  # fmt: skip
                continue
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


_PATH_VARIABLES = ("LEPTON_HOME", "LEPTON_DATA_DIR", "LEPTON_ENCRYPTION_KEY_FILE")


def absolute_env(environ: Mapping[str, str]) -> dict[str, str]:
    """``environ`` with the relative paths it holds made absolute (from this directory).

    Covers Lepton's path settings, ``PYTHONPATH`` entries and a relative SQLite file in
    ``LEPTON_DATABASE_URL``: a replica runs elsewhere and must see the same files.
    """
    env = dict(environ)
    for name in _PATH_VARIABLES:
        if env.get(name):
            env[name] = os.path.abspath(os.path.expanduser(env[name]))
    if env.get("PYTHONPATH"):
        parts = env["PYTHONPATH"].split(os.pathsep)
        env["PYTHONPATH"] = os.pathsep.join(os.path.abspath(p) for p in parts)
    url = env.get("LEPTON_DATABASE_URL", "")
    if url.startswith("sqlite"):
        from sqlalchemy.engine import make_url

        try:
            parsed = make_url(url)
        except Exception:  # an invalid URL: the replica reports it as the launcher would
            return env
        database = parsed.database
        if database and database != ":memory:" and not database.startswith("file:"):
            absolute = os.path.abspath(os.path.expanduser(database))
            env["LEPTON_DATABASE_URL"] = parsed.set(database=absolute).render_as_string(
                hide_password=False
            )
    return env


def _describe(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"
