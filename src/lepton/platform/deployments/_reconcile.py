"""The machinery under :class:`~lepton.platform.deployments._manager.DeploymentManager`, which is
the API and the monitor thread: what keeps each deployment's supervisor process in line
with its row.

* records: the ``deployments`` rows, and each deployment's :class:`_Runtime` (what is
  known of it beyond its row);
* processes: ``lepton deploy`` started in its own session, told apart from a later
  process with the same pid (:mod:`lepton.platform._procs`), drained and stopped;
* talking to it: ``/readyz``, ``/healthz`` and the ``/metrics`` scrape;
* reconciling: what a monitor round does to one deployment, and recovery at server start.

Each deployment has a folder, ``home/deployments/NAME/``: ``token`` (mode 0600),
``process.json`` (its supervisor's pid and fingerprint, for the next server) and
``log.txt`` (the supervisor's output).
"""

from __future__ import annotations

import builtins
import contextlib
import json
import logging
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select

from lepton._fs import atomic_write, atomic_write_bytes
from lepton.errors import DeploymentError, NotFoundError
from lepton.platform import _procs
from lepton.platform.deployments._metrics import Series, parse_metrics
from lepton.platform.deployments._specs import (
    NAME,
    DeploymentView,
    base_url,
    describe_exit,
    port_free,
    view_of,
)
from lepton.storage import Database
from lepton.storage.schema import DeploymentRow

__all__: list[str] = []  # the private base of DeploymentManager: nothing public here

log = logging.getLogger("lepton.platform.deployments")

_LOG_ROTATE_BYTES = 10 * 2**20
_REPLICA = b"lepton.serve._worker"  # in the command line of a deployment's replicas


@dataclass
class _Runtime:
    """What the manager knows of one deployment beyond its row."""

    name: str
    port: int
    token: str
    desired: str
    state: str
    series: Series
    process: subprocess.Popen[bytes] | None = None  # ours; None when adopted
    pid: int | None = None
    ident: str | None = None  # _procs.fingerprint(pid) when we started or adopted it
    fresh: bool = True  # started by this manager: its counters began at zero
    spawned_at: float = 0.0  # time.monotonic()
    was_ready: bool = False  # ready at least once since it was started
    ready_since: float | None = None
    unready_since: float | None = None
    failures: int = 0  # exits in a row
    next_start: float = 0.0
    port_busy_since: float | None = None
    kill_reason: str | None = None
    kill_deadline: float | None = None
    exited_group: int | None = None  # the group of the supervisor that last exited
    exited_at: float = 0.0
    scaling: bool = False


class _Reconciler:
    """Records, processes, probes and reconciling of the deployments; no public API.

    :class:`~lepton.platform.deployments._manager.DeploymentManager` sets these attributes in its
    constructor, whose arguments say what they mean.
    """

    _db: Database
    home: Path
    host: str
    grace_s: float
    max_restarts: int
    startup_timeout_s: float
    unhealthy_timeout_s: float
    stable_s: float
    samples: int
    _runtimes: dict[str, _Runtime]
    _locks: dict[str, threading.Lock]
    _guard: threading.Lock
    _series_lock: threading.Lock
    _http: httpx.Client

    # -- reconciling -----------------------------------------------------------------------

    def _reconcile(self, name: str) -> None:
        row = self._row(name)
        if row is None:
            self._runtimes.pop(name, None)
            return
        rt = self._runtime(row)
        if row.desired != "running":
            if self._alive(rt):  # a stop the previous server did not finish
                self._stop_process(rt)
            if row.state != "stopped" or row.pid is not None:
                self._set(name, rt, state="stopped", pid=None)
            return
        if rt.pid is not None and not self._alive(rt):
            self._exited(row, rt)
            row = self._require(name)
        now = time.monotonic()
        if rt.pid is None:
            if rt.state != "failed" and now >= rt.next_start:
                self._restart(row, rt, now)
            return
        if row.pid != rt.pid:
            self._set(name, rt, pid=rt.pid)
        self._check(rt, now)

    def _exited(self, row: DeploymentRow, rt: _Runtime) -> None:
        now = time.monotonic()
        code = rt.process.returncode if rt.process is not None else None
        reason = rt.kill_reason or f"its supervisor (pid {rt.pid}) exited ({describe_exit(code)})"
        rt.exited_group, rt.exited_at = rt.pid, now
        self._forget_process(rt)
        rt.failures += 1
        tail = self._tail(row.name, 1500).strip()
        last = f"; last lines of its log:\n{tail}" if tail else ""
        if rt.failures > self.max_restarts:
            state = "failed"
            error = (
                f"{reason}; gave up after {self.max_restarts} restarts in a row: fix the cause "
                f"and start the deployment again{last}"
            )
        else:
            state = "restarting"
            rt.next_start = now + (0.0 if rt.failures == 1 else min(30.0, 2.0 ** (rt.failures - 2)))
            error = f"{reason}; restarting it{last}"
        log.warning("deployment %s: %s (%s)", row.name, reason, state)
        restarts = row.restarts + (state == "restarting")
        self._set(row.name, rt, state=state, pid=None, restarts=restarts, error=error[:4000])

    def _restart(self, row: DeploymentRow, rt: _Runtime, now: float) -> None:
        if port_free(self.host, row.port):
            self._launch(row, rt, state="restarting" if row.restarts else "starting")
            return
        # Replicas of the supervisor that died drain (PR_SET_PDEATHSIG) and release it.
        rt.port_busy_since = rt.port_busy_since or now
        if rt.exited_group is not None and now - rt.exited_at > self.grace_s + 5:
            _procs.kill_group_members(rt.exited_group, _REPLICA)
        waited = now - rt.port_busy_since
        if waited > self.grace_s + 30:
            self._set(
                row.name, rt, state="failed",
                error=f"port {row.port} on {self.host} stayed in use by another program for "
                f"{waited:.0f} s; free it and start the deployment again, or delete it and "
                f"create it with another port",
            )  # fmt: skip

    def _check(self, rt: _Runtime, now: float) -> None:
        if rt.kill_deadline is not None:  # being restarted: its exit is handled next round
            if now > rt.kill_deadline and rt.pid is not None:
                _procs.send_signal(rt.pid, signal.SIGKILL, group=True)
            return
        if self._probe(rt) == "ready":
            rt.was_ready, rt.unready_since = True, None
            rt.ready_since = rt.ready_since or now
            if now - rt.ready_since >= self.stable_s:
                rt.failures = 0
            if rt.state != "ready":
                self._set(rt.name, rt, state="ready")
            self._scrape(rt)
            return
        rt.ready_since = None
        if not rt.was_ready:
            if now - rt.spawned_at > self.startup_timeout_s:
                self._kill_for(rt, f"it was not ready {self.startup_timeout_s:.0f} s after start")
            return
        rt.unready_since = rt.unready_since or now
        if rt.state != "unhealthy":
            self._set(rt.name, rt, state="unhealthy")
        if now - rt.unready_since > self.unhealthy_timeout_s:
            self._kill_for(rt, f"it was not ready for {self.unhealthy_timeout_s:.0f} s")

    def _kill_for(self, rt: _Runtime, reason: str) -> None:
        log.warning("restarting deployment %s: %s", rt.name, reason)
        rt.kill_reason = reason
        rt.kill_deadline = time.monotonic() + self.grace_s + 10
        if rt.pid is not None:
            _procs.send_signal(rt.pid, signal.SIGTERM)
        self._set(rt.name, rt, state="unhealthy", error=f"{reason}; restarting it")

    def _recover(self, row: DeploymentRow, rt: _Runtime) -> None:
        name = row.name
        alive = self._alive(rt)
        if row.desired != "running":
            if alive:
                self._stop_process(rt)
            if row.state != "stopped" or row.pid is not None:
                self._set(name, rt, state="stopped", pid=None)
            return
        reason: str | None = None
        if alive and rt.pid is not None:
            age = _procs.age(rt.pid)
            young = age is not None and age < self.startup_timeout_s
            if rt.token and (self._healthz(rt) or young):
                rt.spawned_at = time.monotonic() - (age or 0.0)
                ready = self._probe(rt) == "ready"
                rt.was_ready = ready
                rt.ready_since = time.monotonic() if ready else None
                state = "ready" if ready else "restarting" if row.restarts else "starting"
                self._set(name, rt, pid=rt.pid, state=state)
                log.info("adopted deployment %s (pid %d, %s)", name, rt.pid, state)
                return
            reason = f"its supervisor (pid {rt.pid}) did not answer /healthz at server start"
            self._stop_process(rt)
        elif row.state == "failed":
            return
        elif row.pid is not None or rt.pid is not None:
            reason = f"its supervisor (pid {row.pid or rt.pid}) had exited at server start"
            rt.exited_group, rt.exited_at = row.pid or rt.pid, time.monotonic()
        self._forget_process(rt)
        if reason is not None:
            log.warning("deployment %s: %s; restarting it", name, reason)
            self._set(name, rt, restarts=row.restarts + 1, error=f"{reason}; restarted")
        row = self._require(name)
        if port_free(self.host, row.port):
            self._launch(row, rt, state="restarting" if reason else "starting")
        else:  # its old replicas still drain: the monitor starts it once the port is free
            self._set(name, rt, state="restarting", pid=None)

    # -- processes -------------------------------------------------------------------------

    def _launch(self, row: DeploymentRow, rt: _Runtime, *, state: str) -> DeploymentView:
        try:
            pid = self._spawn(row, rt)
        except OSError as exc:
            self._set(
                row.name, rt, state="failed", pid=None,
                error=f"cannot start `lepton deploy` ({exc}); check the server's Python "
                f"environment and start the deployment again",
            )  # fmt: skip
            raise DeploymentError(f"cannot start deployment {row.name!r}: {exc}") from None
        return self._set(row.name, rt, state=state, pid=pid)

    def _spawn(self, row: DeploymentRow, rt: _Runtime) -> int:
        folder = self._folder(row.name)
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        rt.token = rt.token or self._read_token(row.name)
        if not rt.token:  # its file was removed: the old process is gone, a new token
            rt.token = secrets.token_urlsafe(32)
            self._write_token(folder, rt.token)
        args = [
            "deploy", f"{row.model_name}:{row.version}", "--replicas", str(row.replicas),
            "--port", str(row.port), "--host", self.host, "--grace", str(self.grace_s),
        ]  # fmt: skip
        env = {
            **os.environ,
            "LEPTON_SERVE_TOKEN": rt.token,
            "LEPTON_DATABASE_URL": self._db.url,  # the manager's database, whatever the default
            "PYTHONUNBUFFERED": "1",
        }
        path = folder / "log.txt"
        with contextlib.suppress(OSError):
            if path.stat().st_size > _LOG_ROTATE_BYTES:
                os.replace(path, folder / "log.1.txt")
        with open(path, "ab") as out:
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

    def _alive(self, rt: _Runtime) -> bool:
        if rt.pid is None:
            return False
        if rt.process is not None:
            return rt.process.poll() is None
        return rt.ident is not None and _procs.matches_fingerprint(rt.pid, rt.ident)

    def _stop_process(self, rt: _Runtime) -> None:
        """SIGTERM the supervisor (it drains its replicas); SIGKILL the group if it lingers."""
        pid = rt.pid
        if pid is None:
            return
        if not _procs.terminate(pid, lambda: self._alive(rt), grace_s=self.grace_s + 10):
            log.warning("deployment %s did not stop in time; killed it", rt.name)
        _procs.kill_group_members(pid, _REPLICA)
        if rt.process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                rt.process.wait(timeout=5)
        self._forget_process(rt)
        self._wait_port(rt.port, 5.0)

    def _forget_process(self, rt: _Runtime) -> None:
        rt.process, rt.pid, rt.ident = None, None, None
        rt.kill_reason, rt.kill_deadline = None, None
        with contextlib.suppress(OSError):
            (self._folder(rt.name) / "process.json").unlink()

    def _wait_port(self, port: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not port_free(self.host, port):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    # -- talking to deployments ------------------------------------------------------------

    def _probe(self, rt: _Runtime) -> str:
        """``ready``, ``not_ready`` (it answers 503: loading or draining) or ``down``."""
        try:
            answer = self._http.get(f"{base_url(self.host, rt.port)}/readyz", timeout=1.0)
        except httpx.HTTPError:
            return "down"
        return "ready" if answer.status_code == 200 else "not_ready"

    def _healthz(self, rt: _Runtime) -> bool:
        try:
            return self._http.get(f"{base_url(self.host, rt.port)}/healthz").status_code == 200
        except httpx.HTTPError:
            return False

    def _scrape(self, rt: _Runtime) -> None:
        try:
            answer = self._http.get(
                f"{base_url(self.host, rt.port)}/metrics",
                headers={"authorization": f"Bearer {rt.token}"},
            )
        except httpx.HTTPError:
            return
        if answer.status_code != 200 or rt.pid is None:
            log.warning("deployment %s: /metrics answered %d", rt.name, answer.status_code)
            return
        try:
            counters = parse_metrics(answer.text)
        except (ValueError, KeyError) as exc:
            log.warning("deployment %s: unreadable /metrics (%s)", rt.name, exc)
            return
        with self._series_lock:
            rt.series.add(rt.pid, counters, time.time(), fresh=rt.fresh)

    # -- records ---------------------------------------------------------------------------

    def _names(self) -> builtins.list[str]:
        with self._db.session() as s:
            return builtins.list(s.scalars(select(DeploymentRow.name).order_by(DeploymentRow.name)))

    def _row(self, name: str) -> DeploymentRow | None:
        with self._db.session() as s:
            row = s.get(DeploymentRow, name)
            if row is not None:
                s.expunge(row)
            return row

    def _require(self, name: str) -> DeploymentRow:
        row = self._row(name)
        if row is None:
            raise NotFoundError(
                f"no deployment named {name!r}; list them with GET /api/v1/deployments"
            )
        return row

    def _set(self, name: str, rt: _Runtime | None, **values: Any) -> DeploymentView:
        with self._db.session() as s:
            row = s.get(DeploymentRow, name)
            if row is None:
                raise NotFoundError(f"deployment {name!r} was deleted meanwhile")
            for key, value in values.items():
                setattr(row, key, value)
            row.updated_at = time.time()
            view = view_of(row, self.host)
        if rt is not None:
            rt.state, rt.desired = view.state, view.desired
        return view

    def _runtime(self, row: DeploymentRow) -> _Runtime:
        rt = self._runtimes.get(row.name)
        if rt is None:
            rt = _Runtime(
                name=row.name, port=row.port, token=self._read_token(row.name),
                desired=row.desired, state=row.state, series=Series(self.samples),
            )  # fmt: skip
            recorded = self._read_process(row.name)
            if recorded is not None:  # started by an earlier server: adopt it if alive
                rt.pid, rt.ident, rt.fresh = recorded[0], recorded[1], False
                rt.spawned_at = time.monotonic() - (_procs.age(recorded[0]) or 0.0)
            rt = self._runtimes.setdefault(row.name, rt)
        rt.desired, rt.state = row.desired, row.state
        return rt

    def _lock(self, name: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(name, threading.Lock())

    def _folder(self, name: str) -> Path:
        if not NAME.fullmatch(name):  # names come from URLs: never a path of our choosing
            raise NotFoundError(f"no deployment named {name!r}")
        return self.home / "deployments" / name

    def _write_token(self, folder: Path, token: str) -> None:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)

        def write(tmp: Path) -> None:
            tmp.write_text(token)
            tmp.chmod(0o600)

        atomic_write(folder / "token", write)

    def _read_token(self, name: str) -> str:
        try:
            return (self._folder(name) / "token").read_text().strip()
        except OSError:
            return ""

    def _read_process(self, name: str) -> tuple[int, str] | None:
        try:
            data = json.loads((self._folder(name) / "process.json").read_text())
            return int(data["pid"]), str(data["ident"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _tail(self, name: str, max_bytes: int) -> str:
        try:
            with open(self._folder(name) / "log.txt", "rb") as handle:
                size = handle.seek(0, os.SEEK_END)
                handle.seek(max(0, size - max_bytes))
                data = handle.read()
        except OSError:
            return ""
        text = data.decode(errors="replace")
        return text if len(data) < max_bytes else text.partition("\n")[2]
