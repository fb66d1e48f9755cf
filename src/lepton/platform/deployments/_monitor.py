"""The monitor: keeps each deployment's supervisor in line with its row.

About every second (:meth:`Monitor.tick`), for each deployment not being changed by an
API call right now:

* a supervisor that died is restarted (at once, then after 1, 2, 4, ... 30 s); after
  ``max_restarts`` exits in a row the deployment is ``failed`` until started again;
* ``GET /readyz`` tells ``starting`` / ``restarting`` -> ``ready`` <-> ``unhealthy``; one
  that is not ready for too long is restarted (SIGTERM, SIGKILL after the grace);
* a ready one's ``/metrics`` is scraped (:class:`~._scraper.MetricsScraper`), and the
  memory and CPU use of its processes read from ``/proc`` (``Runtime.memory_mb``,
  ``Runtime.cpu_percent``);
* a stopped one is made sure to have no process.

At server start, :meth:`Monitor.recover` adopts the supervisors still alive (same pid
and fingerprint, answering ``/healthz``) and restarts the rest.
"""

from __future__ import annotations

import logging
import signal
import threading
import time

import httpx

from lepton.errors import DeploymentError
from lepton.platform import _procs
from lepton.platform.deployments._process import ProcessControl
from lepton.platform.deployments._runtime import Runtime, Runtimes
from lepton.platform.deployments._scraper import MetricsScraper
from lepton.platform.deployments._specs import DeploymentView, base_url, describe_exit
from lepton.platform.deployments._store import DeploymentStore
from lepton.storage.schema import DeploymentRow

__all__ = ["Monitor"]

log = logging.getLogger("lepton.platform.deployments")

_STABLE_S = 30.0  # ready this long: earlier exits no longer count as "in a row"


class Monitor:
    """Health checks, restarts with a backoff, and recovery, in a background thread.

    Args:
        store: The rows.
        processes: The supervisors.
        runtimes: What is known of each deployment, and its lock.
        scraper: Scrapes the ready ones' ``/metrics``.
        http: The client for ``/readyz`` and ``/healthz`` (loopback, short timeouts).
        max_restarts: Exits in a row after which a deployment is ``failed``.
        startup_timeout_s: A (re)started deployment not ready by then is restarted.
        unhealthy_timeout_s: A deployment that stops being ready for this long is restarted.
    """

    def __init__(
        self,
        store: DeploymentStore,
        processes: ProcessControl,
        runtimes: Runtimes,
        scraper: MetricsScraper,
        http: httpx.Client,
        *,
        max_restarts: int,
        startup_timeout_s: float,
        unhealthy_timeout_s: float,
    ) -> None:
        self.store = store
        self.processes = processes
        self.runtimes = runtimes
        self.scraper = scraper
        self._http = http
        self.max_restarts = max_restarts
        self.startup_timeout_s = startup_timeout_s
        self.unhealthy_timeout_s = unhealthy_timeout_s
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    # -- the thread --------------------------------------------------------------------

    def start(self, interval_s: float) -> None:
        """Run :meth:`tick` every ``interval_s`` in a background thread."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stopping.clear()
        self._thread = threading.Thread(
            target=self._run, args=(interval_s,), name="lepton-deployments", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread (after the round in progress)."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
            self._thread = None

    def _run(self, interval_s: float) -> None:
        while not self._stopping.is_set():
            began = time.monotonic()
            try:
                self.tick()
            except Exception:  # the database may be briefly unreachable: next round
                log.exception("deployment monitor round failed; trying again")
            self._stopping.wait(max(0.05, interval_s - (time.monotonic() - began)))

    def tick(self) -> None:
        """One round over every deployment whose lock is free (see the module doc)."""
        for name in self.store.names():
            lock = self.runtimes.lock(name)
            if not lock.acquire(blocking=False):
                continue  # an API call is changing it
            try:
                self._reconcile(name)
            except Exception:
                log.exception("checking deployment %s failed", name)
            finally:
                lock.release()

    def recover(self) -> None:
        """At server start, before :meth:`start`: adopt or restart every deployment."""
        for name in self.store.names():
            with self.runtimes.lock(name):
                row = self.store.row(name)
                if row is None:
                    continue
                self.runtimes.drop(name)  # load it afresh from its folder
                self.scraper.forget(name)
                try:
                    self._recover(row, self.runtimes.of(row))
                except Exception:
                    log.exception("recovering deployment %s failed", name)

    # -- starting ----------------------------------------------------------------------

    def launch(self, row: DeploymentRow, rt: Runtime, *, state: str) -> DeploymentView:
        """Start ``row``'s supervisor and record it as ``state``; the caller holds its lock.

        Raises:
            DeploymentError: The process cannot be started (the deployment is ``failed``).
        """
        try:
            pid = self.processes.spawn(row, rt)
        except OSError as exc:
            self.store.update(
                row.name, rt, state="failed", pid=None,
                error=f"cannot start `lepton deploy` ({exc.strerror or type(exc).__name__}); "
                "check the server's Python environment and start the deployment again",
            )  # fmt: skip
            raise DeploymentError(f"cannot start deployment {row.name!r}: {exc}") from None
        return self.store.update(row.name, rt, state=state, pid=pid)

    # -- one deployment, one round -----------------------------------------------------

    def _reconcile(self, name: str) -> None:
        row = self.store.row(name)
        if row is None:
            self.runtimes.drop(name)
            self.scraper.forget(name)
            return
        rt = self.runtimes.of(row)
        if row.desired != "running":
            if self.processes.alive(rt):  # a stop the previous server did not finish
                self.processes.stop(rt)
            if row.state != "stopped" or row.pid is not None:
                self.store.update(name, rt, state="stopped", pid=None)
            return
        if rt.pid is not None and not self.processes.alive(rt):
            self._exited(row, rt)
            row = self.store.require(name)
        now = time.monotonic()
        if rt.pid is None:
            if rt.state != "failed" and now >= rt.next_start:
                self._restart(row, rt, now)
            return
        if row.pid != rt.pid:
            self.store.update(name, rt, pid=rt.pid)
        self._check(rt, now)

    def _exited(self, row: DeploymentRow, rt: Runtime) -> None:
        now = time.monotonic()
        code = rt.process.returncode if rt.process is not None else None
        reason = rt.kill_reason or f"its supervisor (pid {rt.pid}) exited ({describe_exit(code)})"
        rt.exited_group, rt.exited_at = rt.pid, now
        self.processes.forget(rt)
        rt.failures += 1
        tail = self.processes.log_tail(row.name, 1500).strip()
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
        self.store.update(
            row.name, rt, state=state, pid=None, restarts=restarts, error=error[:4000]
        )

    def _restart(self, row: DeploymentRow, rt: Runtime, now: float) -> None:
        if self.processes.port_free(row.port):
            self.launch(row, rt, state="restarting" if row.restarts else "starting")
            return
        # Replicas of the supervisor that died drain (PR_SET_PDEATHSIG) and release it.
        grace_s = self.processes.grace_s
        rt.port_busy_since = rt.port_busy_since or now
        if rt.exited_group is not None and now - rt.exited_at > grace_s + 5:
            self.processes.kill_replicas(rt.exited_group)
        waited = now - rt.port_busy_since
        if waited > grace_s + 30:
            self.store.update(
                row.name, rt, state="failed",
                error=f"port {row.port} on {self.processes.host} stayed in use by another "
                f"program for {waited:.0f} s; free it and start the deployment again, or "
                f"delete it and create it with another port",
            )  # fmt: skip

    def _check(self, rt: Runtime, now: float) -> None:
        if rt.kill_deadline is not None:  # being restarted: its exit is handled next round
            if now > rt.kill_deadline:
                self.processes.signal(rt, signal.SIGKILL, group=True)
            return
        if self._probe(rt) == "ready":
            rt.was_ready, rt.unready_since = True, None
            rt.ready_since = rt.ready_since or now
            if now - rt.ready_since >= _STABLE_S:
                rt.failures = 0
            if rt.state != "ready":
                rt.serving_since = time.time()
                self.store.update(rt.name, rt, state="ready")
            self.scraper.scrape(rt)
            if rt.pid is not None:  # the supervisor's group: it and its replicas
                _usage(rt, _procs.group_usage(rt.pid), now)
            return
        rt.ready_since = None
        if not rt.was_ready:
            if now - rt.spawned_at > self.startup_timeout_s:
                self._kill_for(rt, f"it was not ready {self.startup_timeout_s:.0f} s after start")
            return
        rt.unready_since = rt.unready_since or now
        if rt.state != "unhealthy":
            self.store.update(rt.name, rt, state="unhealthy")
        if now - rt.unready_since > self.unhealthy_timeout_s:
            self._kill_for(rt, f"it was not ready for {self.unhealthy_timeout_s:.0f} s")

    def _kill_for(self, rt: Runtime, reason: str) -> None:
        log.warning("restarting deployment %s: %s", rt.name, reason)
        rt.kill_reason = reason
        rt.kill_deadline = time.monotonic() + self.processes.grace_s + 10
        self.processes.signal(rt, signal.SIGTERM)
        self.store.update(rt.name, rt, state="unhealthy", error=f"{reason}; restarting it")

    def _recover(self, row: DeploymentRow, rt: Runtime) -> None:
        name = row.name
        alive = self.processes.alive(rt)
        if row.desired != "running":
            if alive:
                self.processes.stop(rt)
            if row.state != "stopped" or row.pid is not None:
                self.store.update(name, rt, state="stopped", pid=None)
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
                self.store.update(name, rt, pid=rt.pid, state=state)
                log.info("adopted deployment %s (pid %d, %s)", name, rt.pid, state)
                return
            reason = f"its supervisor (pid {rt.pid}) did not answer /healthz at server start"
            self.processes.stop(rt)
        elif row.state == "failed":
            return
        elif row.pid is not None or rt.pid is not None:
            reason = f"its supervisor (pid {row.pid or rt.pid}) had exited at server start"
            rt.exited_group, rt.exited_at = row.pid or rt.pid, time.monotonic()
        self.processes.forget(rt)
        if reason is not None:
            log.warning("deployment %s: %s; restarting it", name, reason)
            self.store.update(name, rt, restarts=row.restarts + 1, error=f"{reason}; restarted")
        row = self.store.require(name)
        if self.processes.port_free(row.port):
            self.launch(row, rt, state="restarting" if reason else "starting")
        else:  # its old replicas still drain: the monitor starts it once the port is free
            self.store.update(name, rt, state="restarting", pid=None)

    # -- probes ------------------------------------------------------------------------

    def _probe(self, rt: Runtime) -> str:
        """``ready``, ``not_ready`` (it answers 503: loading or draining) or ``down``."""
        url = f"{base_url(self.processes.host, rt.port)}/readyz"
        try:
            answer = self._http.get(url, timeout=1.0)
        except httpx.HTTPError:
            return "down"
        return "ready" if answer.status_code == 200 else "not_ready"

    def _healthz(self, rt: Runtime) -> bool:
        try:
            answer = self._http.get(f"{base_url(self.processes.host, rt.port)}/healthz")
        except httpx.HTTPError:
            return False
        return answer.status_code == 200


def _usage(rt: Runtime, usage: tuple[float, float] | None, now: float) -> None:
    """Record a ready deployment's memory, and its CPU use since the previous round (100
    is one core). A replica that exited takes its CPU seconds with it: a round whose total
    went down measures nothing, the next one does."""
    if usage is None:
        rt.memory_mb = rt.cpu_percent = rt.cpu_seen = None
        return
    rt.memory_mb, cpu_s = usage
    if rt.cpu_seen is not None and now > rt.cpu_seen[0] and cpu_s >= rt.cpu_seen[1]:
        rt.cpu_percent = 100 * (cpu_s - rt.cpu_seen[1]) / (now - rt.cpu_seen[0])
    rt.cpu_seen = (now, cpu_s)
