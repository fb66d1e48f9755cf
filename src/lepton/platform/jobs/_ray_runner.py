"""The Ray actor of one job attempt (:class:`JobRunner`), for
:class:`~lepton.platform.jobs._ray.RayExecutor`.

This module imports the standard library only, and the executor ships the class to the
cluster *by value*: a Ray worker process that becomes a job's actor then imports neither
Lepton nor torch (importing ``lepton`` takes seconds; the actor is up in about one).
The worker it starts is Lepton's own, ``python -m lepton.platform.jobs._worker JOB_ID``,
so a node still needs Lepton installed, in the Python that runs Ray there.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["JobRunner"]

# Run before the worker command, in the child: the kernel SIGKILLs the worker when the
# actor's process dies (ray.kill, a lost node), so no worker outlives its actor unseen.
# It checks its parent first: an actor that died before the prctl left it orphaned.
_LAUNCH = (
    "import ctypes, os, signal, sys\n"
    "ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)\n"
    "os.getppid() == int(sys.argv[1]) or os._exit(137)\n"
    "os.execvp(sys.argv[2], sys.argv[2:])\n"
)
_EXITED = frozenset("ZXx")  # zombie, dead


def _group_of(pid: int) -> tuple[int, str] | None:
    """``(process group, state)`` of ``pid`` from ``/proc``; ``None`` when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # the name may hold spaces and ")"
    return int(fields[2]), fields[0]


def _pss_kb(pid: int) -> int:
    """Proportional set size (shared pages split among their users), else RSS."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    with contextlib.suppress(OSError, ValueError, IndexError):
        pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") // 1024
    return 0


def group_memory_mb(group: int) -> float | None:
    """The memory (MiB) process group ``group`` uses now; ``None`` when none is left (as
    :func:`lepton.platform._procs.group_memory_mb`, which this module may not import)."""
    total, found = 0, False
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        seen = _group_of(int(entry.name))
        if seen is None or seen[0] != group or seen[1] in _EXITED:
            continue
        found = True
        total += _pss_kb(int(entry.name))
    return total / 1024 if found else None


class JobRunner:
    """Runs one attempt's worker command as a subprocess on the node Ray placed it on.

    Args:
        command: The worker command before the job id (``None``: this node's Python
            running ``lepton.platform.jobs._worker``).
        job_id: The job; the worker's only argument.
        token: Tells this attempt's actor apart from another one of the same job.
        workdir: The job's folder (made on this node if missing): the worker's cwd.
        env: The job's variables, over the node's environment.
    """

    def __init__(
        self,
        command: Sequence[str] | None,
        job_id: int,
        token: str,
        workdir: str,
        env: Mapping[str, str],
    ) -> None:
        ray = importlib.import_module("ray")
        self.job_id, self.token = int(job_id), token
        os.makedirs(workdir, mode=0o700, exist_ok=True)
        # the worker's output, on this node, in Ray's folder (gone with the cluster's
        # files, should this actor die before close()); the server's copy is filled by pull()
        try:
            under: str | None = str(ray.get_runtime_context().get_temp_dir())
        except Exception:  # an older Ray: the system's temporary folder
            under = None
        self.spool = Path(tempfile.mkdtemp(prefix=f"lepton-job-{self.job_id}-", dir=under))
        self.log_path = self.spool / "log.txt"
        self.result_path = Path(workdir) / "result.json"
        child_env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        child_env.update(env)
        # the GPUs Ray gave this actor, not the ones the server counted
        child_env["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in ray.get_gpu_ids())
        argv = list(command or (sys.executable, "-m", "lepton.platform.jobs._worker"))
        launch = [sys.executable, "-c", _LAUNCH, str(os.getpid())]
        fd = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "ab") as log:
            self.process = subprocess.Popen(
                [*launch, *argv, str(self.job_id)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=workdir,
                env=child_env,
                start_new_session=True,  # its own process group: cancel reaches its children
            )
        self.sent = 0  # log bytes already handed to the server

    def pull(self, limit: int) -> tuple[int | None, bytes, bool]:
        """The worker's return code (``None`` while it runs), up to ``limit`` new log bytes,
        and whether more are waiting. The code is read first, so once it is known every
        byte the worker wrote is in the file."""
        code = self.process.poll()
        try:
            with open(self.log_path, "rb") as log:
                log.seek(self.sent)
                chunk = log.read(limit + 1)
        except OSError:
            chunk = b""
        more = len(chunk) > limit
        chunk = chunk[:limit]
        self.sent += len(chunk)
        return code, chunk, more

    def result(self) -> bytes | None:
        """The worker's ``result.json`` as written on this node, if any."""
        try:
            return self.result_path.read_bytes()
        except OSError:
            return None

    def signal(self, signum: int) -> None:
        """Send ``signum`` to the worker's process group, unless the worker has ended."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signum)

    def memory_mb(self) -> float | None:
        """The PSS of the worker's process group (MiB); ``None`` once it has ended."""
        if self.process.poll() is not None:
            return None
        return group_memory_mb(self.process.pid)

    def close(self) -> None:
        """Stop what is left of the worker's group, remove the spool, end this actor."""
        ray = importlib.import_module("ray")
        with contextlib.suppress(OSError):
            os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=5)
        shutil.rmtree(self.spool, ignore_errors=True)
        ray.actor.exit_actor()
