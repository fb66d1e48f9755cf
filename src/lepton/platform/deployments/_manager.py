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

This module is the API and the monitor thread; the machinery under them (records,
processes, probes, reconciling) is in :mod:`lepton.platform.deployments._reconcile`, the request
and view models in :mod:`lepton.platform.deployments._specs`, the live figures in
:mod:`lepton.platform.deployments._metrics`.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import secrets
import shutil
import signal
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError as RowConflict

from lepton.errors import ConflictError, DeploymentError, NotFoundError, RegistryError
from lepton.platform import _procs
from lepton.platform.deployments._metrics import Series
from lepton.platform.deployments._reconcile import _Reconciler, _Runtime
from lepton.platform.deployments._specs import (
    MAX_REPLICAS,
    DeploymentRequest,
    DeploymentView,
    base_url,
    json_error,
    port_free,
    view_of,
)
from lepton.storage import Database
from lepton.storage.schema import DeploymentRow

if TYPE_CHECKING:
    from lepton.registry import ModelVersion

__all__ = ["MAX_REPLICAS", "DeploymentManager", "DeploymentRequest", "DeploymentView"]

log = logging.getLogger("lepton.platform.deployments")


class DeploymentManager(_Reconciler):
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
                    if s.get(DeploymentRow, name) is not None:
                        raise ConflictError(
                            f"a deployment named {name!r} already exists; pick another name, "
                            f"or delete it first"
                        )
                    taken = {
                        p: n for n, p in s.execute(select(DeploymentRow.name, DeploymentRow.port))
                    }
                    port = self._choose_port(request.port, taken)
                    row = DeploymentRow(
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
                series=Series(self.samples),
            )  # fmt: skip
            log.info("%s created deployment %s of %s on port %d", user, name, version.ref, port)
            return self._launch(row, rt, state="starting")

    def list(self, offset: int = 0, limit: int = 100) -> tuple[builtins.list[DeploymentView], int]:
        """A page of deployments, oldest first, and how many there are in all."""
        with self._db.session() as s:
            total = s.scalar(select(func.count()).select_from(DeploymentRow)) or 0
            rows = s.scalars(
                select(DeploymentRow)
                .order_by(DeploymentRow.created_at, DeploymentRow.name)
                .offset(max(0, offset))
                .limit(max(0, limit))
            )
            return [view_of(row, self.host) for row in rows], int(total)

    def get(self, name: str) -> DeploymentView:
        """One deployment.

        Raises:
            NotFoundError: No deployment has that name.
        """
        return view_of(self._require(name), self.host)

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
                return view_of(row, self.host)
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
                found = s.get(DeploymentRow, name)
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
            return json_error(
                503, "deployment_stopped",
                f"deployment {name!r} is stopped; start it (POST /api/v1/deployments/{name}/start)",
            )  # fmt: skip
        client = self._async_client()
        url = f"{base_url(self.host, rt.port)}/predict"
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
                return json_error(
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
                return json_error(
                    502, "deployment_error", f"deployment {name!r} broke the connection ({exc})"
                )
            except httpx.TimeoutException:
                return json_error(
                    504, "deadline_exceeded",
                    f"deployment {name!r} did not answer within {self.predict_timeout_s:.0f} s",
                )  # fmt: skip
            except httpx.HTTPError as exc:
                return json_error(
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
            figures = (rt.series if rt is not None else Series(1)).summary(window_s)
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
                        _procs.send_signal(rt.pid, signal.SIGTERM)
                for name, rt in builtins.list(self._runtimes.items()):
                    with self._lock(name):
                        self._stop_process(rt)
                        with contextlib.suppress(NotFoundError):
                            self._set(name, rt, state="stopped", pid=None)
        self._http.close()

    # -- helpers of the API ----------------------------------------------------------------

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
            if not port_free(self.host, requested):
                raise DeploymentError(
                    f"port {requested} on {self.host} is in use by another program; pass "
                    f"another port, or leave it out to get a free one"
                )
            return requested
        start, stop = self.port_range
        for port in range(start, stop):
            if port not in taken and port_free(self.host, port):
                return port
        raise DeploymentError(
            f"no free port in {start}-{stop - 1} on {self.host}; pass a port, or delete "
            f"deployments you no longer need"
        )
