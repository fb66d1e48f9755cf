"""The executor contract between the job scheduler and whatever runs its workers, the
local (subprocess) executor, and the slots the scheduler fills (:class:`Capacity`).

Example:
    >>> executor = LocalExecutor()
    >>> handle = executor.start(7, spec, workdir, env)  # doctest: +SKIP
    >>> executor.poll(handle) is None  # still running  # doctest: +SKIP
    True
    >>> executor.cancel(handle, force=False)  # SIGTERM to its process group  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from lepton._fs import make_dirs, open_private
from lepton.platform import _procs

__all__ = ["Capacity", "Executor", "ExitStatus", "LocalExecutor"]


@dataclass(frozen=True)
class ExitStatus:
    """How a worker ended: an exit ``code``, a ``signal``, or neither when unknown (a
    process this server did not start, e.g. one adopted after a restart)."""

    code: int | None = None
    signal: int | None = None

    def describe(self) -> str:
        """``"exit code 1"``, ``"killed by SIGKILL"`` or ``"ended"``."""
        if self.signal is not None:
            name = _procs.signal_name(self.signal)
            hint = " (out of memory?)" if self.signal == signal.SIGKILL else ""
            return f"killed by {name}{hint}"
        return f"exit code {self.code}" if self.code is not None else "ended"


class Executor(Protocol):
    """The contract between the scheduler and whatever runs workers.

    The scheduler owns the job's state; an executor only starts, watches and stops one
    worker per attempt. The worker writes its log and ``result.json`` into ``workdir``,
    so that folder must be readable by the server (a Ray executor would run the worker
    with the folder on shared storage, or copy both back). Every method is called from
    the scheduler's thread or an API thread, never at the same time for one handle.

    :class:`~lepton.platform.jobs._ray.RayExecutor` runs the same worker inside a named,
    detached Ray actor with the job's ``num_cpus``, ``num_gpus`` and ``memory``, and
    brings its log (and a ``result.json`` written where the folder is not shared) back.

    Attributes:
        name: Stored with each job (``Job.executor``); a handle is only given back to an
            executor of the same name.
    """

    name: str

    def start(
        self,
        job_id: int,
        spec: dict[str, Any],
        workdir: Path,
        env: Mapping[str, str],
        resources: Capacity | None = None,
    ) -> dict[str, Any]:
        """Start the worker of ``job_id`` and return at once.

        Args:
            job_id: The job; the worker is told this number and nothing else of the user's.
            spec: The job's spec (JSON-safe), for executors that ship it with the task.
            workdir: The job's folder: log, result, checkpoints and output go there.
            env: Variables the worker needs (database URL, LEPTON_HOME, visible GPUs).
            resources: What the job reserved (its CPUs, GPUs and memory), for executors
                that place workers themselves (Ray); ``None``: one CPU.

        Returns:
            A JSON-safe handle that :meth:`poll`, :meth:`cancel` and :meth:`adopt`
            accept, also from a new executor after a server restart.

        Raises:
            OSError: The worker could not be started.
        """
        ...

    def poll(self, handle: dict[str, Any]) -> ExitStatus | None:
        """``None`` while the worker runs; once it has ended, how it ended."""
        ...

    def cancel(self, handle: dict[str, Any], *, force: bool) -> None:
        """Ask the worker to stop (``force=False``: it gets to clean up) or stop it now.

        Returns at once; a worker that has already ended is left alone.
        """
        ...

    def adopt(self, handle: dict[str, Any]) -> bool:
        """After a server restart: whether the handle's worker still runs and is really
        the one that was started (not another process that reuses its id)."""
        ...

    def memory_mb(self, handle: dict[str, Any]) -> float | None:
        """The memory the worker and its children use now (MiB), ``None`` if unknown.

        The scheduler stops a worker that uses more than its job reserved.
        """
        ...


class LocalExecutor:
    """Workers as local subprocesses, each in its own session (a process group).

    Output goes to ``workdir/log.txt``. The handle is ``{"pid", "start_time", "host",
    "boot"}``: the start time from ``/proc`` and the boot id tell the worker apart from a
    later process that gets the same pid (see :func:`lepton.platform._procs.is_alive`).
    Cancel sends SIGTERM to the whole group; ``force`` sends SIGKILL.

    Args:
        worker: The command before the job id; default: this Python running
            ``lepton.platform.jobs._worker``. Always an argument list, never a shell string.
    """

    name = "local"

    def __init__(
        self, worker: Sequence[str] = (sys.executable, "-m", "lepton.platform.jobs._worker")
    ) -> None:
        self.worker = tuple(worker)
        self._children: dict[int, subprocess.Popen[bytes]] = {}
        self._lock = threading.Lock()

    def start(
        self,
        job_id: int,
        spec: dict[str, Any],
        workdir: Path,
        env: Mapping[str, str],
        resources: Capacity | None = None,
    ) -> dict[str, Any]:
        """Start ``worker JOB_ID`` in ``workdir``; see :meth:`Executor.start` (the
        scheduler's own slots are this machine's, so ``resources`` is not needed here)."""
        make_dirs(workdir)
        with open_private(workdir / "log.txt", "ab") as log:
            process = subprocess.Popen(
                [*self.worker, str(int(job_id))],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=workdir,
                env={**os.environ, **env},
                start_new_session=True,  # its own process group: cancel reaches its children
            )
        with self._lock:
            self._children[process.pid] = process
        return {
            "pid": process.pid,
            "start_time": _procs.start_time(process.pid),  # a zombie has one until reaped
            "host": socket.gethostname(),
            "boot": _procs.BOOT_ID,
        }

    @staticmethod
    def _alive(handle: Mapping[str, Any]) -> bool:
        pid, started, host, boot = (handle.get(k) for k in ("pid", "start_time", "host", "boot"))
        if not isinstance(pid, int) or not isinstance(host, str):
            return False
        if not isinstance(started, int | None) or not isinstance(boot, str | None):
            return False
        # start_time is None where /proc is missing; boot, in handles of earlier versions
        return _procs.is_alive(pid, started, boot=boot, host=host)

    def poll(self, handle: dict[str, Any]) -> ExitStatus | None:
        """See :meth:`Executor.poll`; a worker adopted after a restart ends with an
        unknown status (its ``result.json`` tells how)."""
        with self._lock:
            process = self._children.get(handle.get("pid", -1))
            if process is not None:
                code = process.poll()
                if code is None:
                    return None
                del self._children[process.pid]
                return ExitStatus(code=code) if code >= 0 else ExitStatus(signal=-code)
        return None if self._alive(handle) else ExitStatus()

    def cancel(self, handle: dict[str, Any], *, force: bool) -> None:
        """SIGTERM (or SIGKILL with ``force``) to the worker's process group."""
        with self._lock:
            process = self._children.get(handle.get("pid", -1))
            if process is not None and process.poll() is not None:
                return
        if process is None and not self._alive(handle):
            return
        _procs.send_signal(
            int(handle["pid"]), signal.SIGKILL if force else signal.SIGTERM, group=True
        )

    def adopt(self, handle: dict[str, Any]) -> bool:
        """See :meth:`Executor.adopt`: same host, boot, pid and start time, not a zombie."""
        return self._alive(handle)

    def memory_mb(self, handle: dict[str, Any]) -> float | None:
        """See :meth:`Executor.memory_mb`: the PSS of the worker's process group."""
        if not self._alive(handle):
            return None
        return _procs.group_memory_mb(int(handle["pid"]))


@dataclass(frozen=True)
class Capacity:
    """What the scheduler may hand out at once: CPUs, GPUs and memory (MiB)."""

    cpus: float
    gpus: int
    memory_mb: int

    @classmethod
    def detect(cls) -> Capacity:
        """This machine: its cores, its CUDA GPUs and its RAM (``/proc/meminfo``)."""
        import torch

        memory_mb = 4096
        try:
            for line in Path("/proc/meminfo").read_text().splitlines():
                if line.startswith("MemTotal:"):
                    memory_mb = int(line.split()[1]) // 1024
        except (OSError, ValueError, IndexError):
            with contextlib.suppress(ValueError, OSError, AttributeError):
                memory_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
        return cls(
            cpus=float(os.cpu_count() or 1), gpus=torch.cuda.device_count(), memory_mb=memory_mb
        )
