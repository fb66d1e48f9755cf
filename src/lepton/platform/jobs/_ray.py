"""Jobs on a Ray cluster: :class:`RayExecutor`, the :class:`Executor` that runs each
attempt's worker inside a Ray actor instead of a local subprocess.

The job's code path is the local one: the actor
(:class:`~lepton.platform.jobs._ray_runner.JobRunner`) starts the same worker
command, ``python -m lepton.platform.jobs._worker JOB_ID``, as a subprocess in its own
process group on the node Ray places it on, with the job's ``num_cpus``, ``num_gpus`` and
``memory`` as the actor's resources and the GPUs Ray assigned as ``CUDA_VISIBLE_DEVICES``.
The actor is *named* (``lepton-job-<id>-<token>``) and *detached* in the ``lepton``
namespace: it outlives the server that started it, and a restarted server finds it by the
name kept in the job's handle (:meth:`RayExecutor.adopt`).

What the worker prints goes to a file on its node; each :meth:`RayExecutor.poll` pulls
the new bytes through Ray and appends them to the job's ``log.txt`` on the server, so the
live log works without shared storage. A ``result.json`` the server's folder lacks (the
worker ran on a node that does not share it) is copied back when the worker ends. The
database and the artifact store must be reachable from every node (PostgreSQL and a
shared or S3 artifact store on a multi-machine cluster); a train job's checkpoints and
output stay in ``LEPTON_HOME/jobs/<id>`` on the node, so ``LEPTON_HOME`` should be on
shared storage there.

Example:
    >>> executor = RayExecutor("127.0.0.1:6379")  # a cluster from `ray start --head`
    >>> JobManager(db, home, executor, executor.capacity())  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import secrets
import signal
import socket
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lepton._fs import atomic_write_bytes, make_dirs, open_private
from lepton.errors import ConfigError, MissingExtraError
from lepton.platform.jobs import _ray_runner
from lepton.platform.jobs._executor import Capacity, ExitStatus
from lepton.platform.jobs._ray_runner import JobRunner

__all__ = ["NAMESPACE", "RayExecutor", "import_ray"]

NAMESPACE = "lepton"
"""The Ray namespace of Lepton's job actors."""

_CHUNK = 1 << 20  # the most log bytes one poll brings back per round trip
_CALL_TIMEOUT_S = 10.0  # a call to a live actor answers in milliseconds


def import_ray() -> Any:
    """The ``ray`` module, imported on first use.

    Raises:
        MissingExtraError: Ray is not installed.
    """
    try:
        return importlib.import_module("ray")
    except ImportError:
        raise MissingExtraError(
            "the Ray executor needs Ray, which is not installed: pip install 'lepton[ray]' "
            "(on the server and on every node of the cluster), or run the server with "
            "--executor local"
        ) from None


def _check_reachable(address: str) -> None:
    """Refuse a ``HOST:PORT`` nothing listens on, at once (``auto`` and ``ray://``
    addresses are left to Ray).

    Raises:
        ConfigError: Nothing answers at the address.
    """
    host, colon, port = address.rpartition(":")
    if not colon or not port.isdigit() or "://" in address or not host:
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
    except OSError as exc:
        raise ConfigError(
            f"no Ray cluster answers at {address} ({exc.strerror or exc}); start one with "
            f"`ray start --head --port PORT` (its head prints the address to pass as "
            f"--ray-address HOST:PORT), or run the server with --executor local"
        ) from None


class RayExecutor:
    """Workers as Ray actors on a cluster; see the module docstring.

    The handle is ``{"actor", "namespace", "job_id", "token", "workdir"}``: the actor's
    name finds it again from a new executor, the token makes sure it is this attempt's.
    Cancel sends SIGTERM (``force``: SIGKILL) to the worker's process group through the
    actor; an actor that does not answer a forced cancel is killed with ``ray.kill``.

    Args:
        address: The cluster (``HOST:PORT`` of its head, as printed by ``ray start
            --head``); ``None``: ``RAY_ADDRESS``, else the one started on this machine.
        worker: The worker command before the job id; default: the node's Python running
            ``lepton.platform.jobs._worker``. Always an argument list, never a shell string.
        namespace: The Ray namespace of the actors.
        poll_wait_s: How long :meth:`poll` waits for the actor's answer before it reports
            the worker as running and keeps the call for the next poll (an actor still
            waiting for its resources answers only once it is placed).
    """

    name = "ray"

    def __init__(
        self,
        address: str | None = None,
        *,
        worker: Sequence[str] | None = None,
        namespace: str = NAMESPACE,
        poll_wait_s: float = 0.2,
    ) -> None:
        self.address = address
        self.worker = tuple(worker) if worker else None
        self.namespace = namespace
        self.poll_wait_s = poll_wait_s
        self._ray: Any = None
        self._runner: Any = None  # JobRunner as a Ray actor class
        self._lock = threading.RLock()
        self._pending: dict[str, Any] = {}  # actor name -> its pull() still under way
        self._actors: dict[str, Any] = {}  # actor name -> its handle
        self._ended: dict[str, ExitStatus] = {}  # actor name -> how its worker ended

    # -- the cluster ------------------------------------------------------------------
    def connect(self) -> Any:
        """Connect this process to the cluster (once) and return the ``ray`` module.

        Raises:
            MissingExtraError: Ray is not installed.
            ConfigError: The cluster cannot be reached.
        """
        with self._lock:
            if self._ray is not None:
                return self._ray
            ray = import_ray()
            if not ray.is_initialized():
                where = self.address or os.environ.get("RAY_ADDRESS") or "auto"
                _check_reachable(where)  # ray.init retries a wrong address for ever
                # ray.init makes SIGTERM call sys.exit(15) in the main thread; the server
                # keeps its own handling (a graceful stop, then the signal re-raised)
                on_sigterm = signal.getsignal(signal.SIGTERM)
                main = threading.current_thread() is threading.main_thread()
                try:
                    ray.init(
                        address=where,
                        namespace=self.namespace,
                        log_to_driver=False,
                        logging_level="WARNING",
                    )
                except (ConnectionError, RuntimeError, ValueError, TimeoutError) as exc:
                    raise ConfigError(
                        f"cannot connect to the Ray cluster at {where}: {exc}; start one with "
                        f"`ray start --head --node-ip-address 127.0.0.1` (its head prints the "
                        f"address) and pass --ray-address HOST:PORT, or run the server with "
                        f"--executor local"
                    ) from None
                finally:
                    if main and on_sigterm is not None:
                        signal.signal(signal.SIGTERM, on_sigterm)
            # the actor's class travels by value: its worker process need not import
            # Lepton (and torch) to become a job's actor (see _ray_runner)
            ray.cloudpickle.register_pickle_by_value(_ray_runner)
            self._ray = ray
            return ray

    def capacity(self) -> Capacity:
        """The cluster's CPUs, GPUs and memory now (all alive nodes together)."""
        total = self.connect().cluster_resources()
        return Capacity(
            cpus=float(total.get("CPU", 0.0)),
            gpus=int(total.get("GPU", 0)),
            memory_mb=int(total.get("memory", 0) // 2**20),
        )

    def _fits_a_node(self, resources: Capacity) -> bool:
        need = {"CPU": resources.cpus, "GPU": resources.gpus, "memory": resources.memory_mb * 2**20}
        for node in self.connect().nodes():
            have = node.get("Resources") or {}
            if node.get("Alive") and all(have.get(k, 0) + 1e-9 >= v for k, v in need.items() if v):
                return True
        return False

    def _actor(self, name: str) -> Any | None:
        """The actor's handle (looked up in the cluster once), ``None`` if there is none."""
        if name in self._actors:
            return self._actors[name]
        ray = self.connect()
        try:
            actor = ray.get_actor(name, namespace=self.namespace)
        except ValueError:  # no such actor (ended, or the cluster was restarted)
            return None
        self._actors[name] = actor
        return actor

    @staticmethod
    def _name(handle: Mapping[str, Any]) -> str | None:
        name, token, job_id = (handle.get(k) for k in ("actor", "token", "job_id"))
        if not (isinstance(name, str) and isinstance(token, str) and isinstance(job_id, int)):
            return None
        return name if name == f"lepton-job-{job_id}-{token}" else None

    # -- the contract -----------------------------------------------------------------
    def start(
        self,
        job_id: int,
        spec: dict[str, Any],
        workdir: Path,
        env: Mapping[str, str],
        resources: Capacity | None = None,
    ) -> dict[str, Any]:
        """Create the job's actor with its resources and return at once; see
        :meth:`Executor.start`.

        Raises:
            OSError: No node of the cluster could ever hold the job, or the cluster
                refused the actor.
        """
        ray = self.connect()
        need = resources or Capacity(cpus=1.0, gpus=0, memory_mb=0)
        if not self._fits_a_node(need):
            raise OSError(
                f"no node of the Ray cluster is large enough for cpus={need.cpus:g}, "
                f"gpus={need.gpus}, memory_mb={need.memory_mb} (Ray places an actor on one "
                f"node); ask for less, or add a larger node to the cluster"
            )
        token = secrets.token_hex(6)
        name = f"lepton-job-{int(job_id)}-{token}"
        options: dict[str, Any] = {
            "name": name,
            "namespace": self.namespace,
            "lifetime": "detached",  # outlives this server; the next one adopts it
            "max_restarts": 0,  # a restarted actor would run the attempt twice
            "num_cpus": need.cpus,
            "num_gpus": need.gpus,
        }
        if need.memory_mb > 0:
            options["memory"] = need.memory_mb * 2**20
        make_dirs(workdir)
        try:
            if self._runner is None:  # made once: Ray exports the class once
                self._runner = ray.remote(JobRunner)
            self._runner.options(**options).remote(
                self.worker, int(job_id), token, str(workdir), dict(env)
            )
        except Exception as exc:  # Ray raises its own types for a refused actor
            raise OSError(f"Ray refused the job's actor: {exc}") from exc
        return {
            "actor": name,
            "namespace": self.namespace,
            "job_id": int(job_id),
            "token": token,
            "workdir": str(workdir),
        }

    def poll(self, handle: dict[str, Any]) -> ExitStatus | None:
        """See :meth:`Executor.poll`; brings the worker's new log lines back as well."""
        name = self._name(handle)
        if name is None:
            return ExitStatus()
        with self._lock:
            if name in self._ended:
                return self._ended[name]
            ray, actor = self.connect(), self._actor(name)
            if actor is None:
                return ExitStatus()
            workdir = Path(str(handle.get("workdir", "")))
            try:
                code = self._pull(ray, name, actor, workdir)
            except ray.exceptions.GetTimeoutError:
                return None
            except ray.exceptions.RayActorError as exc:
                self._pending.pop(name, None)
                return self._ended_with(name, ExitStatus(), workdir, f"its Ray actor died: {exc}")
            if code is None:
                return None
            if not (workdir / "result.json").exists():  # ran where the folder is not shared
                with contextlib.suppress(ray.exceptions.RayError):
                    found = ray.get(actor.result.remote(), timeout=_CALL_TIMEOUT_S)
                    if found is not None:
                        atomic_write_bytes(workdir / "result.json", found)
            actor.close.remote()  # it ends itself once the group is gone; nothing to wait for
            status = ExitStatus(code=code) if code >= 0 else ExitStatus(signal=-code)
            self._ended[name] = status
            self._actors.pop(name, None)
            return status

    def _pull(self, ray: Any, name: str, actor: Any, workdir: Path) -> int | None:
        """Append the worker's new output to ``workdir/log.txt``; its code once it ended."""
        waiting = self._pending.pop(name, None)
        ref = waiting or actor.pull.remote(_CHUNK)
        # a call already waited for in an earlier poll is only checked: an actor still
        # waiting for its resources costs the scheduler's tick nothing
        ready, _ = ray.wait([ref], timeout=0 if waiting else self.poll_wait_s)
        if not ready:
            self._pending[name] = ref  # placed later, or busy: asked again next time
            return None
        while True:
            code, chunk, more = ray.get(ref, timeout=_CALL_TIMEOUT_S)
            if chunk:
                with open_private(workdir / "log.txt", "ab") as log:
                    log.write(chunk)
            if not more:
                return code  # type: ignore[no-any-return]
            ref = actor.pull.remote(_CHUNK)

    def _ended_with(self, name: str, status: ExitStatus, workdir: Path, why: str) -> ExitStatus:
        """Record an actor that died under its worker: the reason in the log, and as the
        attempt's error when the worker left no result (retried like a crash)."""
        with contextlib.suppress(OSError):
            with open_private(workdir / "log.txt", "a", encoding="utf-8") as log:
                log.write(f"[ray] {why}\n")
            if not (workdir / "result.json").exists():
                error = f"{why}; the attempt is retried while attempts remain"[:2000]
                found = {"ok": False, "deterministic": False, "error": error}
                atomic_write_bytes(workdir / "result.json", json.dumps(found).encode())
        self._ended[name] = status
        self._actors.pop(name, None)
        return status

    def cancel(self, handle: dict[str, Any], *, force: bool) -> None:
        """SIGTERM (or SIGKILL with ``force``) to the worker's process group, through its
        actor; a forced cancel kills an actor that does not answer (one still waiting
        for resources, say) with ``ray.kill``."""
        name = self._name(handle)
        if name is None:
            return
        with self._lock:
            if name in self._ended:
                return
            ray, actor = self.connect(), self._actor(name)
            if actor is None:
                return
            signum = signal.SIGKILL if force else signal.SIGTERM
            try:
                ray.get(actor.signal.remote(int(signum)), timeout=2.0)
            except ray.exceptions.GetTimeoutError:
                if force:
                    ray.kill(actor, no_restart=True)
            except ray.exceptions.RayActorError:
                return

    def adopt(self, handle: dict[str, Any]) -> bool:
        """See :meth:`Executor.adopt`: the named actor still exists on the cluster. Its name
        holds the job and this attempt's random token, and names are unique in the
        namespace, so it is this attempt's. A worker that ended while no server watched is
        adopted too: the next :meth:`poll` brings back its log, result and exit code."""
        name = self._name(handle)
        if name is None:
            return False
        with self._lock:
            return name not in self._ended and self._actor(name) is not None

    def memory_mb(self, handle: dict[str, Any]) -> float | None:
        """See :meth:`Executor.memory_mb`: the PSS of the worker's process group, measured
        by its actor on its node."""
        name = self._name(handle)
        if name is None:
            return None
        with self._lock:
            if name in self._ended:
                return None
            ray, actor = self.connect(), self._actor(name)
            if actor is None:
                return None
            try:
                used = ray.get(actor.memory_mb.remote(), timeout=_CALL_TIMEOUT_S)
            except ray.exceptions.RayError:
                return None
            return None if used is None else float(used)
