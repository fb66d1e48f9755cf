"""Deployments the platform server keeps served: create, scale, stop, watch, recover.

A deployment is one ``lepton deploy NAME:VERSION`` supervisor process (which runs and
restarts the replicas) on its own port, started by :class:`DeploymentManager`. Its row
holds what should be (``desired`` running or stopped, the pinned version, the replica
count, the port) and what was last seen (``state``, ``pid``, ``restarts``, ``error``);
the manager's monitor thread reconciles the two about every second:

* a supervisor that died is restarted (at once, then after 1, 2, 4, ... 30 s); after
  ``max_restarts`` crashes in a row the deployment is ``failed`` until started again;
* ``GET /readyz`` tells ``starting`` / ``restarting`` -> ``ready`` <-> ``unhealthy``;
  one that is not ready for too long is restarted;
* ``GET /metrics`` is scraped into a ring buffer per deployment (for
  :meth:`~DeploymentManager.metrics`).

Supervisors run in their own session, so they outlive the server: a server restart
interrupts no deployment, and :meth:`~DeploymentManager.recover` adopts the ones still
alive (same pid and ``/proc`` start time, answering ``/healthz``) and restarts the rest.

Each deployment has its own random bearer token (``home/deployments/NAME/token``, mode
0600): other local processes cannot call it, the manager can (for ``/metrics`` and the
``/predict`` proxy). The supervisor's output goes to ``home/deployments/NAME/log.txt``.

Known gap: :meth:`~DeploymentManager.scale` replaces the supervisor (its replicas share
the socket it bound, and a second supervisor cannot bind the port while the first
listens). While the old one drains it answers 503; then the port is closed for the
second or so a new one takes to start, and new connections wait while its replicas load
the model. Requests through :meth:`~DeploymentManager.predict` ride this out (they are
retried for up to ``proxy_wait_s``); clients calling the port directly see it.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import json
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
from prometheus_client.parser import text_string_to_metric_families
from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError as RowConflict

from lepton._fs import atomic_write, atomic_write_bytes
from lepton.errors import ConflictError, DeploymentError, NotFoundError, RegistryError
from lepton.storage import Database
from lepton.storage._schema import Deployment

if TYPE_CHECKING:
    from lepton.registry import ModelVersion

__all__ = ["MAX_REPLICAS", "DeploymentManager", "DeploymentRequest", "DeploymentView"]

log = logging.getLogger("lepton.server.deployments")

MAX_REPLICAS = 16
_NAME = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
# The service's own routes (lepton.serve._app._BUILTIN): our probes and scrapes hit
# them every second, so they are not the deployment's traffic.
_BUILTIN_ROUTES = frozenset({"/", "/healthz", "/readyz", "/metrics", "/openapi.json"})
# No ``lepton/cli/__main__.py``: run the CLI's entry point, never a shell string.
_CLI = "from lepton.cli import main; main()"
_LOG_ROTATE_BYTES = 10 * 2**20


class DeploymentRequest(BaseModel):
    """What creating a deployment takes (``POST /api/v1/deployments``).

    Example:
        >>> DeploymentRequest(name="mnist-prod", model="mnist-convnet@production").replicas
        1
    """

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="1-63 of a-z, 0-9 and '-', like a DNS label: mnist-prod.")
    model: str = Field(
        min_length=1,
        max_length=300,
        description="A registered version: name@production (alias or stage), name:3, name.",
    )
    replicas: int = Field(1, ge=1, le=MAX_REPLICAS, description="Replica processes.")
    port: int | None = Field(
        None, ge=1, le=65535, description="TCP port; default: the first free one of the range."
    )

    @field_validator("name")
    @classmethod
    def _dns_label(cls, value: str) -> str:
        if not _NAME.fullmatch(value):
            raise ValueError(
                f"name {value!r} must be 1-63 characters of a-z, 0-9 and '-', starting and "
                f"ending with a letter or digit (e.g. 'mnist-prod')"
            )
        return value


class DeploymentView(BaseModel):
    """A deployment as the API shows it.

    ``model_ref`` is the reference it was created from (``mnist@production``); ``ref``
    is the version it serves (``mnist:3``), pinned at creation so moving an alias later
    changes no running deployment. ``error`` is the last problem seen, kept after a
    recovery so the reason for ``restarts`` stays visible.
    """

    name: str
    model_ref: str
    model_name: str
    version: int
    ref: str
    replicas: int
    port: int
    url: str
    desired: str
    state: str
    pid: int | None
    restarts: int
    error: str | None
    created_by: str
    created_at: float
    updated_at: float


@dataclass
class _Counters:
    """Cumulative figures of one ``/metrics`` answer, builtin routes left out."""

    requests: float = 0.0
    errors: float = 0.0
    latency_sum: float = 0.0
    latency_count: float = 0.0
    buckets: dict[float, float] = field(default_factory=dict)  # upper bound -> cumulative
    queue_depth: float = 0.0
    inflight: float = 0.0


@dataclass(frozen=True)
class _Sample:
    """What happened between two scrapes."""

    t: float
    dt: float
    requests: float
    errors: float
    latency_sum: float
    latency_count: float
    buckets: dict[float, float]


def _parse_metrics(text: str) -> _Counters:
    c = _Counters()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.labels.get("route") in _BUILTIN_ROUTES:
                continue
            name, value = sample.name, float(sample.value)
            if name == "lepton_requests_total":
                c.requests += value
            elif name == "lepton_errors_total":
                c.errors += value
            elif name == "lepton_request_duration_seconds_sum":
                c.latency_sum += value
            elif name == "lepton_request_duration_seconds_count":
                c.latency_count += value
            elif name == "lepton_request_duration_seconds_bucket":
                le = float(sample.labels["le"])
                c.buckets[le] = c.buckets.get(le, 0.0) + value
            elif name == "lepton_queue_depth":
                c.queue_depth += value
            elif name == "lepton_inflight_requests":
                c.inflight += value
    c.inflight = max(0.0, c.inflight - 1)  # the scrape itself is in flight
    return c


def _quantile(q: float, buckets: dict[float, float]) -> float | None:
    """Estimate a quantile from cumulative histogram buckets, as Prometheus does."""
    bounds = sorted(buckets)
    total = buckets[bounds[-1]] if bounds else 0.0
    if total <= 0:
        return None
    rank, lower, below = q * total, 0.0, 0.0
    for upper in bounds:
        count = buckets[upper]
        if count >= rank:
            if upper == float("inf"):
                return lower
            return lower + (upper - lower) * (rank - below) / max(count - below, 1e-12)
        lower, below = upper, count
    return lower


class _Series:
    """A ring buffer of scrape-to-scrape samples of one deployment, and its totals."""

    def __init__(self, size: int) -> None:
        self.samples: deque[_Sample] = deque(maxlen=size)
        self.last: _Counters | None = None
        self.last_t: float | None = None
        self.pid: int | None = None
        self.requests_total = 0.0
        self.errors_total = 0.0
        self.queue_depth = 0.0
        self.inflight = 0.0

    def add(self, pid: int, now: _Counters, t: float, *, fresh: bool) -> None:
        previous = self.last
        if pid != self.pid:
            self.pid = pid
            if fresh:  # started by us: its counters began at zero
                previous = _Counters()
            else:  # adopted: what it counted before is history, not this window's
                previous = now
                self.requests_total += now.requests
                self.errors_total += now.errors
        assert previous is not None
        if now.requests < previous.requests:  # a counter reset
            previous = _Counters()
        dt = t - self.last_t if self.last_t is not None else 1.0
        sample = _Sample(
            t=t,
            dt=max(dt, 1e-3),
            requests=now.requests - previous.requests,
            errors=max(0.0, now.errors - previous.errors),
            latency_sum=max(0.0, now.latency_sum - previous.latency_sum),
            latency_count=max(0.0, now.latency_count - previous.latency_count),
            buckets={
                le: max(0.0, v - previous.buckets.get(le, 0.0)) for le, v in now.buckets.items()
            },
        )
        self.samples.append(sample)
        self.requests_total += sample.requests
        self.errors_total += sample.errors
        self.queue_depth, self.inflight = now.queue_depth, now.inflight
        self.last, self.last_t = now, t

    def summary(self, window_s: float) -> dict[str, Any]:
        recent = [s for s in self.samples if s.t >= time.time() - window_s]
        span = sum(s.dt for s in recent)
        count = sum(s.latency_count for s in recent)
        buckets: dict[float, float] = {}
        for s in recent:
            for le, v in s.buckets.items():
                buckets[le] = buckets.get(le, 0.0) + v
        p50, p99 = _quantile(0.5, buckets), _quantile(0.99, buckets)
        return {
            "scraped_at": self.last_t,
            "requests_total": int(self.requests_total),
            "errors_total": int(self.errors_total),
            "rps": sum(s.requests for s in recent) / span if span else 0.0,
            "errors_per_s": sum(s.errors for s in recent) / span if span else 0.0,
            "latency_ms_mean": 1000 * sum(s.latency_sum for s in recent) / count if count else None,
            "latency_ms_p50": None if p50 is None else 1000 * p50,
            "latency_ms_p99": None if p99 is None else 1000 * p99,
            "queue_depth": self.queue_depth,
            "inflight": self.inflight,
            "series": [
                {
                    "t": s.t,
                    "rps": s.requests / s.dt,
                    "latency_ms": 1000 * s.latency_sum / s.latency_count
                    if s.latency_count
                    else None,
                    "errors": int(s.errors),
                }
                for s in self.samples
            ],
        }


# -- processes --------------------------------------------------------------------------

_PROC = Path("/proc/self/stat").exists()


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


_BOOT = _boot_id()


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def _stat(pid: int) -> tuple[str, int, int] | None:
    """``(state, process group, start time in clock ticks after boot)`` of a live pid."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rpartition(")")[2].split()
    return fields[0], int(fields[2]), int(fields[19])


def _identity(pid: int) -> str | None:
    """Who holds ``pid`` now (boot and start time), ``None`` when nothing alive does.

    A pid is reused by other programs once ours has exited: the start time tells them
    apart. Without ``/proc`` (not Linux) only existence is checked.
    """
    if not _PROC:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return "alive"
    stat = _stat(pid)
    if stat is None:
        return None
    if stat[0] in ("Z", "X"):  # exited; reap it if it is our child
        _reap(pid)
        return None
    return f"{_BOOT}:{stat[2]}"


def _age(pid: int) -> float | None:
    """Seconds since ``pid`` started, when ``/proc`` tells."""
    stat = _stat(pid)
    try:
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return None if stat is None else uptime - stat[2] / os.sysconf("SC_CLK_TCK")


def _kill_leftovers(group: int) -> None:
    """SIGKILL replicas that outlived their supervisor (process group ``group``)."""
    if not _PROC:
        return
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        stat = _stat(int(entry.name))
        if stat is None or stat[1] != group:
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if b"lepton.serve._worker" in cmdline:  # never anything but our replicas
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(int(entry.name), signal.SIGKILL)


def _port_free(host: str, port: int) -> bool:
    """Whether the supervisor could bind ``host:port`` now (same options as it uses)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _describe(code: int | None) -> str:
    if code is None:
        return "exit status unknown"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"


def _url(host: str, port: int) -> str:
    return f"http://{'[' + host + ']' if ':' in host else host}:{port}"


def _view(row: Deployment, host: str) -> DeploymentView:
    return DeploymentView(
        name=row.name,
        model_ref=row.model_ref,
        model_name=row.model_name,
        version=row.version,
        ref=f"{row.model_name}:{row.version}",
        replicas=row.replicas,
        port=row.port,
        url=_url(host, row.port),
        desired=row.desired,
        state=row.state,
        pid=row.pid,
        restarts=row.restarts,
        error=row.error,
        created_by=row.created_by,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _json_error(status: int, code: str, message: str) -> tuple[int, str, bytes]:
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    return status, "application/json", body


@dataclass
class _Runtime:
    """What the manager knows of one deployment beyond its row."""

    name: str
    port: int
    token: str
    desired: str
    state: str
    series: _Series
    process: subprocess.Popen[bytes] | None = None  # ours; None when adopted
    pid: int | None = None
    ident: str | None = None  # _identity(pid) when we started or adopted it
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


class DeploymentManager:
    """Creates, scales, stops, watches and recovers the server's deployments.

    Methods that change a deployment block until its process has started (or, for
    :meth:`stop`, drained and exited: at most ``grace_s`` + 10 s); call them from worker
    threads, not an event loop. :meth:`predict` is the async one.

    Args:
        db: The metadata database; its ``deployments`` table is the source of truth.
        home: ``LEPTON_HOME``; a deployment's token and log live in
            ``home/deployments/NAME/``.
        host: The address deployments listen on (loopback: only this machine reaches
            them directly; the server proxies ``/predict``).
        port_range: Ports ``[start, stop)`` given to deployments created without one.
        grace_s: How long a stopping deployment lets requests in progress finish.
        max_restarts: Exits in a row after which a deployment is ``failed``.
        startup_timeout_s: A (re)started deployment not ready by then is restarted.
        unhealthy_timeout_s: A deployment that stops being ready for this long is restarted.
        proxy_wait_s: How long :meth:`predict` waits for a deployment being (re)started.
        predict_timeout_s: How long :meth:`predict` waits for an answer.
        samples: Metric samples kept per deployment (one per monitor tick).

    Example:
        >>> manager = DeploymentManager(open_database(), get_settings().home)  # doctest: +SKIP
        >>> manager.recover()  # doctest: +SKIP
        >>> manager.start_monitor()  # doctest: +SKIP
        >>> request = DeploymentRequest(name="mnist", model="mnist-convnet@production")
        >>> manager.create(request, user="ada").url  # doctest: +SKIP
        'http://127.0.0.1:8100'
    """

    def __init__(
        self,
        db: Database,
        home: Path,
        *,
        host: str = "127.0.0.1",
        port_range: tuple[int, int] = (8100, 8300),
        grace_s: float = 10.0,
        max_restarts: int = 5,
        startup_timeout_s: float = 120.0,
        unhealthy_timeout_s: float = 30.0,
        proxy_wait_s: float = 10.0,
        predict_timeout_s: float = 60.0,
        samples: int = 300,
    ) -> None:
        if not 0 < port_range[0] < port_range[1] <= 65536:
            raise DeploymentError(f"port_range {port_range} must be (start, stop) in 1..65536")
        self._db = db
        self.home = Path(home)
        self.host = host
        self.port_range = port_range
        self.grace_s = grace_s
        self.max_restarts = max_restarts
        self.startup_timeout_s = startup_timeout_s
        self.unhealthy_timeout_s = unhealthy_timeout_s
        self.stable_s = 30.0  # ready this long: earlier exits no longer count as "in a row"
        self.proxy_wait_s = proxy_wait_s
        self.predict_timeout_s = predict_timeout_s
        self.samples = samples
        self._runtimes: dict[str, _Runtime] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self._tick_lock = threading.Lock()
        self._series_lock = threading.Lock()
        self._http = httpx.Client(trust_env=False, timeout=httpx.Timeout(2.0, connect=0.5))
        self._aclients: dict[asyncio.AbstractEventLoop, httpx.AsyncClient] = {}
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    # -- the API ---------------------------------------------------------------------------

    def create(self, request: DeploymentRequest, user: str) -> DeploymentView:
        """Deploy a registered version under a new name and start it.

        The reference is resolved now and the version pinned: the deployment serves
        ``name:version`` even after ``@production`` moves. It is ``starting`` until its
        replicas are ready (the monitor sees it).

        Raises:
            ConflictError: The name, or the requested port, is taken by a deployment.
            DeploymentError: No ready version matches the reference, the port is used by
                another program, or no port of the range is free.
        """
        version = self._resolve(request.model)
        name = request.name
        with self._lock(name):
            now = time.time()
            try:
                with self._db.session() as s:
                    if s.get(Deployment, name) is not None:
                        raise ConflictError(
                            f"a deployment named {name!r} already exists; pick another name, "
                            f"or delete it first"
                        )
                    taken = {p: n for n, p in s.execute(select(Deployment.name, Deployment.port))}
                    port = self._choose_port(request.port, taken)
                    row = Deployment(
                        name=name, model_ref=request.model, model_name=version.name,
                        version=version.version, replicas=request.replicas, port=port,
                        desired="running", state="starting", pid=None, restarts=0, error=None,
                        created_by=user, created_at=now, updated_at=now,
                    )  # fmt: skip
                    s.add(row)
            except RowConflict:
                raise ConflictError(
                    f"deployment {name!r} or its port was taken by a request at the same "
                    f"moment; retry"
                ) from None
            folder = self._folder(name)
            shutil.rmtree(folder, ignore_errors=True)  # left by a deleted namesake
            token = secrets.token_urlsafe(32)
            self._write_token(folder, token)
            rt = self._runtimes[name] = _Runtime(
                name=name, port=port, token=token, desired="running", state="starting",
                series=_Series(self.samples),
            )  # fmt: skip
            log.info("%s created deployment %s of %s on port %d", user, name, version.ref, port)
            return self._launch(row, rt, state="starting")

    def list(self, offset: int = 0, limit: int = 100) -> tuple[builtins.list[DeploymentView], int]:
        """A page of deployments, oldest first, and how many there are in all."""
        with self._db.session() as s:
            total = s.scalar(select(func.count()).select_from(Deployment)) or 0
            rows = s.scalars(
                select(Deployment)
                .order_by(Deployment.created_at, Deployment.name)
                .offset(max(0, offset))
                .limit(max(0, limit))
            )
            return [_view(row, self.host) for row in rows], int(total)

    def get(self, name: str) -> DeploymentView:
        """One deployment.

        Raises:
            NotFoundError: No deployment has that name.
        """
        return _view(self._require(name), self.host)

    def scale(self, name: str, replicas: int, user: str) -> DeploymentView:
        """Serve with ``replicas`` replica processes from now on.

        A running deployment's supervisor is drained and started again with the new
        count (the port is closed for the moment that takes; :meth:`predict` waits for
        it). A stopped one keeps the count for its next start.

        Raises:
            DeploymentError: ``replicas`` is not in 1..16.
            NotFoundError: No deployment has that name.
        """
        if not 1 <= replicas <= MAX_REPLICAS:
            raise DeploymentError(f"replicas must be 1..{MAX_REPLICAS}, got {replicas}")
        with self._lock(name):
            row = self._require(name)
            rt = self._runtime(row)
            if row.desired != "running" or (row.replicas == replicas and self._alive(rt)):
                return self._set(name, rt, replicas=replicas)
            log.info("%s scales deployment %s to %d replicas", user, name, replicas)
            rt.scaling = True
            try:
                self._set(name, rt, replicas=replicas, state="restarting")
                self._stop_process(rt)
                rt.failures, rt.next_start = 0, 0.0
                return self._launch(self._require(name), rt, state="starting")
            finally:
                rt.scaling = False

    def stop(self, name: str, user: str) -> DeploymentView:
        """Stop serving: SIGTERM, replicas drain, SIGKILL after ``grace_s`` + 10 s.

        The deployment stays stopped (also across server restarts) until :meth:`start`.

        Raises:
            NotFoundError: No deployment has that name.
        """
        with self._lock(name):
            row = self._require(name)
            rt = self._runtime(row)
            log.info("%s stops deployment %s", user, name)
            self._set(name, rt, desired="stopped", state="stopping")
            self._stop_process(rt)
            return self._set(name, rt, state="stopped", pid=None)

    def start(self, name: str, user: str) -> DeploymentView:
        """Serve again a stopped (or ``failed``) deployment, with its pinned version.

        Raises:
            NotFoundError: No deployment has that name.
            DeploymentError: Its version is no longer registered, or its port is used by
                another program.
        """
        with self._lock(name):
            row = self._require(name)
            rt = self._runtime(row)
            if row.desired == "running" and self._alive(rt):
                return _view(row, self.host)
            self._resolve(f"{row.model_name}:{row.version}")
            if not self._wait_port(row.port, 5.0):
                raise DeploymentError(
                    f"port {row.port} on {self.host} is in use by another program; free it, "
                    f"or delete deployment {name!r} and create it again with another port"
                )
            log.info("%s starts deployment %s", user, name)
            rt.failures, rt.next_start = 0, 0.0
            self._set(name, rt, desired="running", error=None)
            return self._launch(self._require(name), rt, state="starting")

    def delete(self, name: str, user: str) -> None:
        """Stop a deployment, then forget it: its row, token and log are removed.

        Raises:
            NotFoundError: No deployment has that name.
        """
        with self._lock(name):
            row = self._require(name)
            rt = self._runtime(row)
            log.info("%s deletes deployment %s", user, name)
            self._set(name, rt, desired="stopped", state="stopping")
            self._stop_process(rt)
            with self._db.session() as s:
                found = s.get(Deployment, name)
                if found is not None:
                    s.delete(found)
            self._runtimes.pop(name, None)
            shutil.rmtree(self._folder(name), ignore_errors=True)

    async def predict(self, name: str, body: bytes, content_type: str) -> tuple[int, str, bytes]:
        """Forward one ``POST /predict`` to the deployment, with its token.

        Answers ``(status, content type, body)``: the deployment's own answer, or a JSON
        error ``{"error": {"code", "message"}}``: 503 when it is stopped or cannot be
        reached (after waiting up to ``proxy_wait_s`` for one being started), 504 when it
        does not answer within ``predict_timeout_s``.

        Raises:
            NotFoundError: No deployment has that name.
        """
        rt = self._runtimes.get(name)
        if rt is None:
            rt = await asyncio.to_thread(lambda: self._runtime(self._require(name)))
        if rt.desired != "running":
            return _json_error(
                503, "deployment_stopped",
                f"deployment {name!r} is stopped; start it (POST /api/v1/deployments/{name}/start)",
            )  # fmt: skip
        client = self._async_client()
        url = f"{_url(self.host, rt.port)}/predict"
        headers = {
            "authorization": f"Bearer {rt.token}",
            "content-type": content_type or "application/octet-stream",
        }
        deadline = time.monotonic() + self.proxy_wait_s
        retried = False
        while True:
            try:
                answer = await client.post(url, content=body, headers=headers)
            except (httpx.ConnectError, httpx.ConnectTimeout):
                if rt.desired == "running" and rt.state != "failed" and time.monotonic() < deadline:
                    await asyncio.sleep(0.1)  # being (re)started: the port opens shortly
                    continue
                return _json_error(
                    503, "deployment_unavailable",
                    f"deployment {name!r} is not answering on port {rt.port} (state "
                    f"{rt.state}); a crashed deployment is restarted automatically: retry in "
                    f"a few seconds, or see its state and log",
                )  # fmt: skip
            except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as exc:
                # A kept-alive connection that a draining supervisor closed under us.
                # Predictions change nothing, so one retry is safe (and only one: an
                # input that crashes replicas must not take down the next one too).
                if not retried and time.monotonic() < deadline:
                    retried = True
                    continue
                return _json_error(
                    502, "deployment_error", f"deployment {name!r} broke the connection ({exc})"
                )
            except httpx.TimeoutException:
                return _json_error(
                    504, "deadline_exceeded",
                    f"deployment {name!r} did not answer within {self.predict_timeout_s:.0f} s",
                )  # fmt: skip
            except httpx.HTTPError as exc:
                return _json_error(
                    502, "deployment_error", f"deployment {name!r} cannot be called ({exc})"
                )
            # A supervisor draining for a scale answers 503 without running the request.
            if answer.status_code == 503 and rt.scaling and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
                continue
            return (
                answer.status_code,
                answer.headers.get("content-type", "application/json"),
                answer.content,
            )

    async def aclose(self) -> None:
        """Close :meth:`predict`'s connections of the running event loop (at shutdown)."""
        client = self._aclients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.aclose()

    def metrics(self, name: str, *, window_s: float = 60.0) -> dict[str, Any]:
        """Live figures of a deployment, from the monitor's scrapes of its ``/metrics``.

        Returns:
            ``requests_total`` and ``errors_total`` (its traffic since this manager began
            watching, plus what an adopted process had counted), ``rps``,
            ``errors_per_s``, ``latency_ms_mean``, ``latency_ms_p50`` and
            ``latency_ms_p99`` (estimated from the histogram buckets) over the last
            ``window_s`` seconds, ``queue_depth``, ``inflight``, ``scraped_at`` (epoch
            seconds of the last scrape), and ``series``: one
            ``{"t", "rps", "latency_ms", "errors"}`` per scrape, oldest first, for a chart.
            Health probes and scrapes are not counted.

        Raises:
            NotFoundError: No deployment has that name.
        """
        row = self._require(name)
        rt = self._runtimes.get(name)
        with self._series_lock:
            figures = (rt.series if rt is not None else _Series(1)).summary(window_s)
        return {"name": name, "state": row.state, "window_s": window_s, **figures}

    def log_tail(self, name: str, max_bytes: int = 64 * 1024) -> str:
        """The end of a deployment's supervisor log (``home/deployments/NAME/log.txt``).

        Raises:
            NotFoundError: No deployment has that name.
        """
        self._require(name)
        return self._tail(name, max_bytes)

    # -- lifecycle -------------------------------------------------------------------------

    def start_monitor(self, interval_s: float = 1.0) -> None:
        """Run :meth:`tick` every ``interval_s`` in a background thread."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stopping.clear()
        self._thread = threading.Thread(
            target=self._monitor, args=(interval_s,), name="lepton-deployments", daemon=True
        )
        self._thread.start()

    def stop_monitor(self) -> None:
        """Stop the monitor thread (after the round in progress)."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
            self._thread = None

    def _monitor(self, interval_s: float) -> None:
        while not self._stopping.is_set():
            began = time.monotonic()
            try:
                self.tick()
            except Exception:  # the database may be briefly unreachable: next round
                log.exception("deployment monitor round failed; trying again")
            self._stopping.wait(max(0.05, interval_s - (time.monotonic() - began)))

    def tick(self) -> None:
        """One monitor round over every deployment that is not being changed right now.

        A running one's supervisor is checked (restarted with a backoff when it exited),
        its ``/readyz`` sets ``ready`` / ``unhealthy``, and its ``/metrics`` is scraped;
        a stopped one is made sure to have no process.
        """
        with self._tick_lock:
            for name in self._names():
                lock = self._lock(name)
                if not lock.acquire(blocking=False):
                    continue  # an API call is changing it
                try:
                    self._reconcile(name)
                except Exception:
                    log.exception("checking deployment %s failed", name)
                finally:
                    lock.release()

    def recover(self) -> None:
        """At server start: adopt the deployments still serving, restart the others.

        A running deployment whose supervisor is alive (same pid and ``/proc`` start time
        as recorded) and answers ``/healthz`` (or is still starting) is adopted as is;
        one whose supervisor is gone or hung is (re)started and counted as a restart. A
        stopped one is left stopped; a ``failed`` one stays failed until :meth:`start`.
        """
        with self._tick_lock:
            for name in self._names():
                with self._lock(name):
                    row = self._row(name)
                    if row is None:
                        continue
                    self._runtimes.pop(name, None)
                    try:
                        self._recover(row, self._runtime(row))
                    except Exception:
                        log.exception("recovering deployment %s failed", name)

    def shutdown(self, stop_deployments: bool = False) -> None:
        """At server exit: stop the monitor; stop the deployments only if asked.

        By default they keep serving, and the next server's :meth:`recover` adopts them.
        With ``stop_deployments`` they drain and exit, and :meth:`recover` starts the
        ones whose desired state is running again.
        """
        self.stop_monitor()
        if stop_deployments:
            with self._tick_lock:
                for rt in self._runtimes.values():  # drain them all at once
                    if rt.pid is not None and self._alive(rt):
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(rt.pid, signal.SIGTERM)
                for name, rt in builtins.list(self._runtimes.items()):
                    with self._lock(name):
                        self._stop_process(rt)
                        with contextlib.suppress(NotFoundError):
                            self._set(name, rt, state="stopped", pid=None)
        self._http.close()

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

    def _exited(self, row: Deployment, rt: _Runtime) -> None:
        now = time.monotonic()
        code = rt.process.returncode if rt.process is not None else None
        reason = rt.kill_reason or f"its supervisor (pid {rt.pid}) exited ({_describe(code)})"
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

    def _restart(self, row: Deployment, rt: _Runtime, now: float) -> None:
        if _port_free(self.host, row.port):
            self._launch(row, rt, state="restarting" if row.restarts else "starting")
            return
        # Replicas of the supervisor that died drain (PR_SET_PDEATHSIG) and release it.
        rt.port_busy_since = rt.port_busy_since or now
        if rt.exited_group is not None and now - rt.exited_at > self.grace_s + 5:
            _kill_leftovers(rt.exited_group)
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
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(rt.pid, signal.SIGKILL)
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
            with contextlib.suppress(ProcessLookupError):
                os.kill(rt.pid, signal.SIGTERM)
        self._set(rt.name, rt, state="unhealthy", error=f"{reason}; restarting it")

    def _recover(self, row: Deployment, rt: _Runtime) -> None:
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
            age = _age(rt.pid)
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
        if _port_free(self.host, row.port):
            self._launch(row, rt, state="restarting" if reason else "starting")
        else:  # its old replicas still drain: the monitor starts it once the port is free
            self._set(name, rt, state="restarting", pid=None)

    # -- processes -------------------------------------------------------------------------

    def _launch(self, row: Deployment, rt: _Runtime, *, state: str) -> DeploymentView:
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

    def _spawn(self, row: Deployment, rt: _Runtime) -> int:
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
                [sys.executable, "-c", _CLI, *args],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # outlives the server; its replicas form its group
            )
        ident = _identity(process.pid) or "unknown"
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
        ident = _identity(rt.pid)
        return ident is not None and ident == rt.ident

    def _stop_process(self, rt: _Runtime) -> None:
        """SIGTERM the supervisor (it drains its replicas); SIGKILL the group if it lingers."""
        pid = rt.pid
        if pid is None:
            return
        if self._alive(rt):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + self.grace_s + 10
            while self._alive(rt) and time.monotonic() < deadline:
                time.sleep(0.05)
            if self._alive(rt):
                log.warning("deployment %s did not stop in time; killing it", rt.name)
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)
                deadline = time.monotonic() + 5
                while self._alive(rt) and time.monotonic() < deadline:
                    time.sleep(0.05)
        _kill_leftovers(pid)
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
        while not _port_free(self.host, port):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    # -- talking to deployments ------------------------------------------------------------

    def _probe(self, rt: _Runtime) -> str:
        """``ready``, ``not_ready`` (it answers 503: loading or draining) or ``down``."""
        try:
            answer = self._http.get(f"{_url(self.host, rt.port)}/readyz", timeout=1.0)
        except httpx.HTTPError:
            return "down"
        return "ready" if answer.status_code == 200 else "not_ready"

    def _healthz(self, rt: _Runtime) -> bool:
        try:
            return self._http.get(f"{_url(self.host, rt.port)}/healthz").status_code == 200
        except httpx.HTTPError:
            return False

    def _scrape(self, rt: _Runtime) -> None:
        try:
            answer = self._http.get(
                f"{_url(self.host, rt.port)}/metrics",
                headers={"authorization": f"Bearer {rt.token}"},
            )
        except httpx.HTTPError:
            return
        if answer.status_code != 200 or rt.pid is None:
            log.warning("deployment %s: /metrics answered %d", rt.name, answer.status_code)
            return
        try:
            counters = _parse_metrics(answer.text)
        except (ValueError, KeyError) as exc:
            log.warning("deployment %s: unreadable /metrics (%s)", rt.name, exc)
            return
        with self._series_lock:
            rt.series.add(rt.pid, counters, time.time(), fresh=rt.fresh)

    def _async_client(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        client = self._aclients.get(loop)
        if client is None:
            for old in [other for other in self._aclients if other.is_closed()]:
                del self._aclients[old]
            client = httpx.AsyncClient(
                trust_env=False,
                timeout=httpx.Timeout(self.predict_timeout_s, connect=2.0),
                limits=httpx.Limits(max_connections=256, max_keepalive_connections=64),
            )
            self._aclients[loop] = client
        return client

    # -- records ---------------------------------------------------------------------------

    def _names(self) -> builtins.list[str]:
        with self._db.session() as s:
            return builtins.list(s.scalars(select(Deployment.name).order_by(Deployment.name)))

    def _row(self, name: str) -> Deployment | None:
        with self._db.session() as s:
            row = s.get(Deployment, name)
            if row is not None:
                s.expunge(row)
            return row

    def _require(self, name: str) -> Deployment:
        row = self._row(name)
        if row is None:
            raise NotFoundError(
                f"no deployment named {name!r}; list them with GET /api/v1/deployments"
            )
        return row

    def _set(self, name: str, rt: _Runtime | None, **values: Any) -> DeploymentView:
        with self._db.session() as s:
            row = s.get(Deployment, name)
            if row is None:
                raise NotFoundError(f"deployment {name!r} was deleted meanwhile")
            for key, value in values.items():
                setattr(row, key, value)
            row.updated_at = time.time()
            view = _view(row, self.host)
        if rt is not None:
            rt.state, rt.desired = view.state, view.desired
        return view

    def _runtime(self, row: Deployment) -> _Runtime:
        rt = self._runtimes.get(row.name)
        if rt is None:
            rt = _Runtime(
                name=row.name, port=row.port, token=self._read_token(row.name),
                desired=row.desired, state=row.state, series=_Series(self.samples),
            )  # fmt: skip
            recorded = self._read_process(row.name)
            if recorded is not None:  # started by an earlier server: adopt it if alive
                rt.pid, rt.ident, rt.fresh = recorded[0], recorded[1], False
                rt.spawned_at = time.monotonic() - (_age(recorded[0]) or 0.0)
            rt = self._runtimes.setdefault(row.name, rt)
        rt.desired, rt.state = row.desired, row.state
        return rt

    def _lock(self, name: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(name, threading.Lock())

    def _folder(self, name: str) -> Path:
        if not _NAME.fullmatch(name):  # names come from URLs: never a path of our choosing
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

    def _resolve(self, ref: str) -> ModelVersion:
        from lepton.registry import resolve

        try:
            return resolve(ref, database=self._db)
        except RegistryError as exc:
            raise DeploymentError(f"cannot deploy {ref!r}: {exc.message}") from None

    def _choose_port(self, requested: int | None, taken: dict[int, str]) -> int:
        if requested is not None:
            if requested in taken:
                raise ConflictError(
                    f"port {requested} is in use by deployment {taken[requested]!r}; pass "
                    f"another port, or leave it out to get a free one"
                )
            if not _port_free(self.host, requested):
                raise DeploymentError(
                    f"port {requested} on {self.host} is in use by another program; pass "
                    f"another port, or leave it out to get a free one"
                )
            return requested
        start, stop = self.port_range
        for port in range(start, stop):
            if port not in taken and _port_free(self.host, port):
                return port
        raise DeploymentError(
            f"no free port in {start}-{stop - 1} on {self.host}; pass a port, or delete "
            f"deployments you no longer need"
        )
