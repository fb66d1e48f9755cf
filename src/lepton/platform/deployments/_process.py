"""Each deployment's supervisor process and its folder: start, stop, adopt, ports.

A deployment is one ``lepton deploy NAME:VERSION`` supervisor (which runs and restarts
the replicas), started in its own session so it outlives the server, and told apart
from a later process with the same pid by its fingerprint (:mod:`lepton.platform._procs`).

Each deployment has a private folder, ``home/deployments/NAME/`` (``0700``): ``token``
(its bearer token, ``0600``), ``process.json`` (its supervisor's pid and fingerprint,
for the next server) and ``log.txt`` (the supervisor's output). The folder is also the
supervisor's working directory, never the server's: what the server's directory decides
(relative paths in the environment) is made absolute before it starts, and each replica
runs in an empty directory of its own (:mod:`lepton.serve._supervisor`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path

from lepton._fs import atomic_write, atomic_write_bytes, open_private, private_dir
from lepton.errors import ConflictError, DeploymentError, NotFoundError
from lepton.platform import _procs
from lepton.platform.deployments._runtime import Runtime
from lepton.platform.deployments._specs import NAME, port_free
from lepton.serve._predlog import ENV as PREDLOG_ENV
from lepton.serve._supervisor import absolute_env
from lepton.storage.schema import DeploymentRow

__all__ = ["ProcessControl"]

log = logging.getLogger("lepton.platform.deployments")

_LOG_ROTATE_BYTES = 10 * 2**20
_REPLICA = b"lepton.serve._worker"  # in the command line of a deployment's replicas


class ProcessControl:
    """Starts, stops and adopts deployments' supervisors; owns their folders and ports.

    Args:
        home: ``LEPTON_HOME``; the folders are ``home/deployments/NAME/``.
        host: The address deployments listen on.
        database_url: The manager's database, passed to each supervisor (whatever the
            default of its environment would be).
        port_range: Ports ``[start, stop)`` given to deployments created without one.
        grace_s: How long a stopping supervisor lets requests in progress finish.
    """

    def __init__(
        self,
        home: Path,
        host: str,
        database_url: str,
        *,
        port_range: tuple[int, int],
        grace_s: float,
    ) -> None:
        if not 0 < port_range[0] < port_range[1] <= 65536:
            raise DeploymentError(f"port_range {port_range} must be (start, stop) in 1..65536")
        self.home = Path(home).absolute()  # supervisors run elsewhere: no relative paths
        self.host = host
        self.database_url = database_url
        self.port_range = port_range
        self.grace_s = grace_s

    # -- folders and tokens ------------------------------------------------------------

    def folder(self, name: str) -> Path:
        """``home/deployments/NAME`` (not created).

        Raises:
            NotFoundError: ``name`` is no deployment name (it cannot name a folder).
        """
        if not NAME.fullmatch(name):  # names come from URLs: never a path of our choosing
            raise NotFoundError(f"no deployment named {name!r}")
        return self.home / "deployments" / name

    def new_folder(self, name: str) -> str:
        """Give a new deployment an empty folder with a new token; returns the token."""
        folder = self.folder(name)
        shutil.rmtree(folder, ignore_errors=True)  # left by a deleted namesake
        token = secrets.token_urlsafe(32)
        self._write_token(folder, token)
        return token

    def remove(self, name: str) -> None:
        """Remove a deleted deployment's folder (token, record, log)."""
        shutil.rmtree(self.folder(name), ignore_errors=True)

    def load(self, row: DeploymentRow) -> Runtime:
        """What the folder tells of a deployment seen for the first time: its token, and
        the supervisor an earlier server started (adopted if alive; see :meth:`alive`)."""
        rt = Runtime(
            name=row.name, port=row.port, token=self._read_token(row.name),
            desired=row.desired, state=row.state,
        )  # fmt: skip
        recorded = self._read_process(row.name)
        if recorded is not None:
            rt.pid, rt.ident, rt.fresh = recorded[0], recorded[1], False
            rt.spawned_at = time.monotonic() - (_procs.age(recorded[0]) or 0.0)
        return rt

    def log_tail(self, name: str, max_bytes: int) -> str:
        """The end of the supervisor's log, from a line start; ``""`` when there is none."""
        try:
            with open(self.folder(name) / "log.txt", "rb") as handle:
                size = handle.seek(0, os.SEEK_END)
                handle.seek(max(0, size - max_bytes))
                data = handle.read()
        except OSError:
            return ""
        text = data.decode(errors="replace")
        return text if len(data) < max_bytes else text.partition("\n")[2]

    # -- processes ---------------------------------------------------------------------

    def spawn(self, row: DeploymentRow, rt: Runtime) -> int:
        """Start ``lepton deploy`` for ``row`` in its folder; returns its pid.

        Raises:
            OSError: The process cannot be started.
        """
        folder = private_dir(self.folder(row.name))
        rt.token = rt.token or self._read_token(row.name)
        if not rt.token:  # its file was removed: the old process is gone, a new token
            rt.token = secrets.token_urlsafe(32)
            self._write_token(folder, rt.token)
        args = [
            "deploy", f"{row.model_name}:{row.version}", "--replicas", str(row.replicas),
            "--port", str(row.port), "--host", self.host, "--grace", str(self.grace_s),
        ]  # fmt: skip
        env = absolute_env(
            {**os.environ, "LEPTON_DATABASE_URL": self.database_url, "PYTHONUNBUFFERED": "1"}
        )
        env["LEPTON_SERVE_TOKEN"] = rt.token
        env.pop(PREDLOG_ENV, None)
        with contextlib.suppress(OSError, ValueError):  # written at creation, when asked
            spec = json.loads((folder / "predlog.json").read_text())
            env[PREDLOG_ENV] = json.dumps({**spec, "dir": str(folder / "predictions")})
        path = folder / "log.txt"
        with contextlib.suppress(OSError):
            if path.stat().st_size > _LOG_ROTATE_BYTES:
                os.replace(path, folder / "log.1.txt")
        with open_private(path, "ab") as out:
            out.write(
                f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} lepton {' '.join(args)}\n".encode()
            )
            out.flush()
            process = subprocess.Popen(
                [sys.executable, "-m", "lepton.cli", *args],  # an argument list, no shell
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=folder,  # its own private folder, never the server's directory
                start_new_session=True,  # outlives the server; its replicas form its group
            )
        ident = _procs.fingerprint(process.pid)
        record = json.dumps({"pid": process.pid, "ident": ident}).encode()
        atomic_write_bytes(folder / "process.json", record)
        rt.process, rt.pid, rt.ident, rt.fresh = process, process.pid, ident, True
        rt.spawned_at = time.monotonic()
        rt.was_ready, rt.ready_since, rt.unready_since = False, None, None
        rt.kill_reason, rt.kill_deadline, rt.port_busy_since = None, None, None
        return process.pid

    def alive(self, rt: Runtime) -> bool:
        """Whether ``rt``'s supervisor still runs (ours: not exited; adopted: the same
        pid and fingerprint as recorded)."""
        if rt.pid is None:
            return False
        if rt.process is not None:
            return rt.process.poll() is None
        return rt.ident is not None and _procs.matches_fingerprint(rt.pid, rt.ident)

    def signal(self, rt: Runtime, signum: int, *, group: bool = False) -> None:
        """Send ``signum`` to the supervisor (``group``: and its replicas), if it runs."""
        if rt.pid is not None:
            _procs.send_signal(rt.pid, signum, group=group)

    def stop(self, rt: Runtime) -> None:
        """SIGTERM the supervisor (it drains its replicas); SIGKILL the group if it
        lingers past ``grace_s`` + 10 s. Blocks until it is gone and its port free (or
        5 s more)."""
        pid = rt.pid
        if pid is None:
            return
        if not _procs.terminate(pid, lambda: self.alive(rt), grace_s=self.grace_s + 10):
            log.warning("deployment %s did not stop in time; killed it", rt.name)
        _procs.kill_group_members(pid, _REPLICA)
        if rt.process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                rt.process.wait(timeout=5)
        self.forget(rt)
        self.wait_port(rt.port, 5.0)

    def forget(self, rt: Runtime) -> None:
        """Drop what is known of ``rt``'s supervisor (it exited, or was stopped)."""
        rt.process, rt.pid, rt.ident = None, None, None
        rt.kill_reason, rt.kill_deadline = None, None
        with contextlib.suppress(OSError):
            (self.folder(rt.name) / "process.json").unlink()

    def kill_replicas(self, group: int) -> None:
        """SIGKILL the replicas left of the supervisor whose process group is ``group``."""
        _procs.kill_group_members(group, _REPLICA)

    # -- ports -------------------------------------------------------------------------

    def port_free(self, port: int) -> bool:
        """Whether a supervisor could bind ``port`` now."""
        return port_free(self.host, port)

    def wait_port(self, port: int, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for ``port`` to be free; whether it is."""
        deadline = time.monotonic() + timeout
        while not self.port_free(port):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def choose_port(self, requested: int | None, taken: dict[int, str]) -> int:
        """``requested`` if it is free, else the first free port of the range.

        Args:
            taken: The ports of the deployments (port -> name).

        Raises:
            ConflictError: ``requested`` is another deployment's.
            DeploymentError: ``requested`` is used by another program, or no port of
                the range is free.
        """
        if requested is not None:
            if requested in taken:
                raise ConflictError(
                    f"port {requested} is in use by deployment {taken[requested]!r}; pass "
                    f"another port, or leave it out to get a free one"
                )
            if not self.port_free(requested):
                raise DeploymentError(
                    f"port {requested} on {self.host} is in use by another program; pass "
                    f"another port, or leave it out to get a free one"
                )
            return requested
        start, stop = self.port_range
        for port in range(start, stop):
            if port not in taken and self.port_free(port):
                return port
        raise DeploymentError(
            f"no free port in {start}-{stop - 1} on {self.host}; pass a port, or delete "
            f"deployments you no longer need"
        )

    # -- files -------------------------------------------------------------------------

    def _write_token(self, folder: Path, token: str) -> None:
        private_dir(folder)

        def write(tmp: Path) -> None:
            tmp.write_text(token)
            tmp.chmod(0o600)

        atomic_write(folder / "token", write)

    def _read_token(self, name: str) -> str:
        try:
            return (self.folder(name) / "token").read_text().strip()
        except OSError:
            return ""

    def _read_process(self, name: str) -> tuple[int, str] | None:
        try:
            data = json.loads((self.folder(name) / "process.json").read_text())
            return int(data["pid"]), str(data["ident"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
