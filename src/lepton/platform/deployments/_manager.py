"""Deployments the platform server keeps served: create, scale, stop, watch, recover.

A deployment is one ``lepton deploy NAME:VERSION`` supervisor process (which runs and
restarts the replicas) on its own port. :class:`DeploymentManager` is the facade the API
and the dashboard call; it composes one collaborator per job:

* :class:`~._store.DeploymentStore`: the rows (what should be, what was last seen);
* :class:`~._process.ProcessControl`: the supervisors, their folders, tokens and ports;
* :class:`~._monitor.Monitor`: health checks, restarts with a backoff, recovery;
* :class:`~._scraper.MetricsScraper`: the live series from each ``/metrics``;
* :class:`~._proxy.PredictProxy`: ``/predict`` forwarded over loopback;
* :class:`~._runtime.Runtimes`: what only this server knows of each deployment, and
  the one lock per deployment that every change takes.

Supervisors run in their own session, so they outlive the server: a server restart
interrupts no deployment, and :meth:`~DeploymentManager.recover` adopts the ones still
alive. Each deployment has its own random bearer token: other local processes cannot
call it, the manager can (for ``/metrics`` and the ``/predict`` proxy).

Known gap: :meth:`~DeploymentManager.scale` replaces the supervisor (its replicas share
the socket it bound): the port answers 503 while the old one drains, then is closed until
the new one's replicas load. :meth:`~DeploymentManager.predict` rides this out (retried
for up to ``proxy_wait_s``); clients calling the port directly see it.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from lepton._fs import atomic_write_bytes
from lepton.errors import DeploymentError, RegistryError
from lepton.platform.deployments._aiops import AIOps
from lepton.platform.deployments._canary import Canaries
from lepton.platform.deployments._healing import Healer
from lepton.platform.deployments._monitor import Monitor
from lepton.platform.deployments._process import ProcessControl
from lepton.platform.deployments._proxy import PredictProxy
from lepton.platform.deployments._runtime import Runtime, Runtimes, own_figures
from lepton.platform.deployments._scraper import MetricsScraper
from lepton.platform.deployments._specs import MAX_REPLICAS, DeploymentRequest, DeploymentView
from lepton.platform.deployments._store import DeploymentStore
from lepton.storage import Database

if TYPE_CHECKING:
    from lepton.registry import ModelVersion

__all__ = ["MAX_REPLICAS", "DeploymentManager", "DeploymentRequest", "DeploymentView"]

log = logging.getLogger("lepton.platform.deployments")


class DeploymentManager:
    """Creates, scales, stops, watches and recovers the server's deployments.

    Methods that change a deployment take its lock and block until its process has
    started (or, for :meth:`stop`, drained and exited: at most ``grace_s`` + 10 s); call
    them from worker threads, not an event loop. :meth:`predict` is the async one.

    Args:
        db: The metadata database; its ``deployments`` table is the source of truth.
        home: ``LEPTON_HOME``; a deployment's token and log live in
            ``home/deployments/NAME/``, which is also its supervisor's working directory.
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
        self._db = db
        self._processes = ProcessControl(home, host, db.url, port_range=port_range, grace_s=grace_s)
        self._store = DeploymentStore(db, host)
        self._runtimes = Runtimes(load=self._processes.load)
        self._http = httpx.Client(trust_env=False, timeout=httpx.Timeout(2.0, connect=0.5))
        self._scraper = MetricsScraper(self._http, host, samples)
        self._monitor = Monitor(
            self._store, self._processes, self._runtimes, self._scraper, self._http,
            max_restarts=max_restarts, startup_timeout_s=startup_timeout_s,
            unhealthy_timeout_s=unhealthy_timeout_s,
        )  # fmt: skip
        self._proxy = PredictProxy(host, wait_s=proxy_wait_s, timeout_s=predict_timeout_s)
        self.healer = Healer(self._store, self._processes, self._runtimes, self._monitor,
                             self._scraper, self._resolve)  # restart, rollback  # fmt: skip
        self.canaries = Canaries(self)  # a new version on a share of the traffic first
        self.aiops = AIOps(self)  # anomalies, drift, alert rules, remediation

    @property
    def home(self) -> Path:
        """``LEPTON_HOME`` (absolute)."""
        return self._processes.home

    @property
    def database(self) -> Database:
        """The metadata database."""
        return self._db

    def folder(self, name: str) -> Path:
        """A deployment's folder, ``home/deployments/NAME`` (its token, log, predictions)."""
        return self._processes.folder(name)

    def manifest(self, ref: str) -> dict[str, Any]:
        """The registered manifest of version ``ref`` (``name:3``): its lineage."""
        return dict(self._resolve(ref).manifest)

    @property
    def host(self) -> str:
        """The address deployments listen on."""
        return self._store.host

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
        with self._runtimes.lock(name):
            row = self._store.insert(
                name=name, model_ref=request.model, version=version, replicas=request.replicas,
                user=user, port_for=lambda taken: self._processes.choose_port(request.port, taken),
            )  # fmt: skip
            token = self._processes.new_folder(name)
            if request.prediction_log is not None:
                spec = request.prediction_log.model_dump_json().encode()
                atomic_write_bytes(self._processes.folder(name) / "predlog.json", spec)
            self._scraper.forget(name)  # a deleted namesake's figures
            rt = self._runtimes.put(
                Runtime(name=name, port=row.port, token=token, desired="running", state="starting")
            )
            log.info("%s created deployment %s of %s on port %d", user, name, version.ref, row.port)
            return self._monitor.launch(row, rt, state="starting")

    def list(self, offset: int = 0, limit: int = 100) -> tuple[builtins.list[DeploymentView], int]:
        """A page of deployments, oldest first, and how many there are in all."""
        return self._store.page(offset, limit)

    def get(self, name: str) -> DeploymentView:
        """One deployment.

        Raises:
            NotFoundError: No deployment has that name.
        """
        return self._store.view(self._store.require(name))

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
        with self._runtimes.lock(name):
            row = self._store.require(name)
            rt = self._runtimes.of(row)
            alive = self._processes.alive(rt)
            if row.desired != "running" or (row.replicas == replicas and alive):
                return self._store.update(name, rt, replicas=replicas)
            log.info("%s scales deployment %s to %d replicas", user, name, replicas)
            rt.scaling = True
            try:
                self._store.update(name, rt, replicas=replicas, state="restarting")
                self._processes.stop(rt)
                rt.failures, rt.next_start = 0, 0.0
                return self._monitor.launch(self._store.require(name), rt, state="starting")
            finally:
                rt.scaling = False

    def stop(self, name: str, user: str) -> DeploymentView:
        """Stop serving: SIGTERM, replicas drain, SIGKILL after ``grace_s`` + 10 s.

        The deployment stays stopped (also across server restarts) until :meth:`start`.

        Raises:
            NotFoundError: No deployment has that name.
        """
        with self._runtimes.lock(name):
            rt = self._halt(name, user, "stops")
            return self._store.update(name, rt, state="stopped", pid=None)

    def _halt(self, name: str, user: str, verb: str) -> Runtime:
        """Mark the deployment stopped for good and stop its supervisor (lock held)."""
        rt = self._runtimes.of(self._store.require(name))
        log.info("%s %s deployment %s", user, verb, name)
        self._store.update(name, rt, desired="stopped", state="stopping")
        self._processes.stop(rt)
        return rt

    def start(self, name: str, user: str) -> DeploymentView:
        """Serve again a stopped (or ``failed``) deployment, with its pinned version.

        Raises:
            NotFoundError: No deployment has that name.
            DeploymentError: Its version is no longer registered, or its port is used by
                another program.
        """
        with self._runtimes.lock(name):
            row = self._store.require(name)
            rt = self._runtimes.of(row)
            if row.desired == "running" and self._processes.alive(rt):
                return self._store.view(row)
            self._resolve(f"{row.model_name}:{row.version}")
            if not self._processes.wait_port(row.port, 5.0):
                raise DeploymentError(
                    f"port {row.port} on {self.host} is in use by another program; free it, "
                    f"or delete deployment {name!r} and create it again with another port"
                )
            log.info("%s starts deployment %s", user, name)
            rt.failures, rt.next_start = 0, 0.0
            self._store.update(name, rt, desired="running", error=None)
            return self._monitor.launch(self._store.require(name), rt, state="starting")

    def delete(self, name: str, user: str) -> None:
        """Stop a deployment, then forget it: its row, token and log are removed.

        Raises:
            NotFoundError: No deployment has that name.
        """
        self.canaries.discard(name, user)  # its canary goes with it
        with self._runtimes.lock(name):
            self._halt(name, user, "deletes")
            self._store.delete(name)
            self._runtimes.drop(name)
            self._scraper.forget(name)
            self._processes.remove(name)
            self.aiops.forget(name)

    async def predict(
        self, name: str, body: bytes, content_type: str, *, route: str = "predict"
    ) -> tuple[int, str, bytes]:
        """Forward one ``POST /predict`` (or ``/explain``: ``route="explain"``) to the
        deployment, with its token.

        Answers ``(status, content type, body)``: the deployment's own answer, or a JSON
        error ``{"error": {"code", "message"}}``: 503 when it is stopped or cannot be
        reached (after waiting up to ``proxy_wait_s`` for one being started), 502 when it
        broke the connection, 504 when it does not answer within ``predict_timeout_s``.

        Raises:
            NotFoundError: No deployment has that name.
        """
        return await self._proxy.forward(await self._target(name), body, content_type, route)

    async def predict_stream(
        self, name: str, body: bytes, content_type: str, *, route: str
    ) -> tuple[int, str, AsyncIterator[bytes] | bytes]:
        """As :meth:`predict` for a streamed route (``chat``): a 200 answer's body is an
        async iterator of its chunks as the deployment sends them."""
        return await self._proxy.stream(await self._target(name), body, content_type, route)

    async def _target(self, name: str) -> Runtime:
        """The runtime one request to ``name`` goes to: its canary's for the canary's share
        (:meth:`~._canary.Canaries.pick`), else its own."""
        rt = self._runtimes.get(name)
        if rt is None:
            rt = await asyncio.to_thread(lambda: self._runtimes.of(self._store.require(name)))
        canary = self.canaries.pick(name) if rt.desired == "running" else None
        return canary or rt

    def runtime(self, name: str) -> Runtime | None:
        """What this server knows of deployment ``name`` now (``None``: not seen yet)."""
        return self._runtimes.get(name)

    async def aclose(self) -> None:
        """Close :meth:`predict`'s connections of the running event loop (at shutdown)."""
        await self._proxy.aclose()

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
            Health probes and scrapes are not counted. Plus :func:`~._runtime.own_figures`
            (memory, and what :meth:`predict` answered: timeouts and 5xx included).

        Raises:
            NotFoundError: No deployment has that name.
        """
        row = self._store.require(name)
        figures = {**self._scraper.summary(name, window_s),
                   **own_figures(self._runtimes.get(name), window_s)}  # fmt: skip
        return {"name": name, "state": row.state, "window_s": window_s, **figures}

    def log_tail(self, name: str, max_bytes: int = 64 * 1024) -> str:
        """The end of a deployment's supervisor log (``home/deployments/NAME/log.txt``).

        Raises:
            NotFoundError: No deployment has that name.
        """
        self._store.require(name)
        return self._processes.log_tail(name, max_bytes)

    # -- lifecycle -------------------------------------------------------------------------

    def start_monitor(self, interval_s: float = 1.0) -> None:
        """Run :meth:`tick` every ``interval_s`` in a background thread, and the AIOps
        loop (anomalies, drift, alert rules) in another."""
        self._monitor.start(interval_s)
        self.aiops.start(interval_s)

    def stop_monitor(self) -> None:
        """Stop the monitor and AIOps threads (after the round in progress)."""
        self._monitor.stop()
        self.aiops.stop()

    def tick(self) -> None:
        """One monitor round over every deployment that is not being changed right now.

        A running one's supervisor is checked (restarted with a backoff when it exited),
        its ``/readyz`` sets ``ready`` / ``unhealthy``, and its ``/metrics`` is scraped;
        a stopped one is made sure to have no process.
        """
        self._monitor.tick()

    def recover(self) -> None:
        """At server start: adopt the deployments still serving, restart the others.

        A running deployment whose supervisor is alive (same pid and ``/proc`` start time
        as recorded) and answers ``/healthz`` (or is still starting) is adopted as is;
        one whose supervisor is gone or hung is (re)started and counted as a restart. A
        stopped one is left stopped; a ``failed`` one stays failed until :meth:`start`.
        Call it before :meth:`start_monitor`.
        """
        self._monitor.recover()

    def shutdown(self) -> None:
        """At server exit: stop the monitor. The deployments keep serving, and the next
        server's :meth:`recover` adopts them (``lepton deployments stop --all`` stops them)."""
        self.stop_monitor()
        self._http.close()

    def _resolve(self, ref: str) -> ModelVersion:
        from lepton.registry import resolve

        try:
            return resolve(ref, database=self._db)
        except RegistryError as exc:
            raise DeploymentError(f"cannot deploy {ref!r}: {exc.message}") from None
