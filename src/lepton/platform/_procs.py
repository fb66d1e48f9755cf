"""Local processes the server starts and must find again: jobs' workers, deployments'
supervisors. One implementation of what both need.

A pid is handed to another program once its process has exited, so a pid alone does not
say that a process the server started still runs. Its start time (clock ticks after
boot, field 22 of ``/proc/<pid>/stat``), the boot id and the host name do: record them
when the process starts (:func:`start_time`, :data:`BOOT_ID`), and :func:`is_alive`
checks them later, also from a new server after a restart. Without ``/proc`` (not
Linux) only whether the pid exists and is ours to signal can be told
(:func:`lepton._procs.pid_ours`: another user's process is alive, but not one the server
started).

Processes are started in their own session, so that one signal reaches a process and
its children: :func:`terminate` asks it to stop and kills its group after a grace.

Example:
    >>> import subprocess, sys
    >>> process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
    ...                            start_new_session=True)  # doctest: +SKIP
    >>> started = start_time(process.pid)  # doctest: +SKIP
    >>> is_alive(process.pid, started, boot=BOOT_ID)  # doctest: +SKIP
    True
    >>> terminate(process.pid, lambda: process.poll() is None, grace_s=5)  # doctest: +SKIP
    True
"""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path

from lepton._procs import BOOT_ID, EXITED, HAVE_PROC, ProcStat, pid_ours, proc_stat, start_time

__all__ = [
    "BOOT_ID",
    "HAVE_PROC",
    "ProcStat",
    "age",
    "fingerprint",
    "group_memory_mb",
    "group_usage",
    "is_alive",
    "kill_group_members",
    "matches_fingerprint",
    "proc_stat",
    "send_signal",
    "signal_name",
    "start_time",
    "terminate",
]


def is_alive(
    pid: int, started: int | None = None, *, boot: str | None = None, host: str | None = None
) -> bool:
    """Whether ``pid`` is still the running process that was recorded.

    It must run: a zombie has ended (it is not reaped here, so that the ``Popen`` that
    started it still learns its exit status). And each of ``started``
    (:func:`start_time`), ``boot`` (:data:`BOOT_ID`) and ``host`` (``socket.gethostname()``)
    that was recorded must match: a pid reused by another program, after a reboot or on
    another machine sharing the folder, is not ours. Without ``/proc`` pid reuse cannot
    be detected: a pid that exists and that this user may signal counts as alive.

    Args:
        pid: The process id.
        started: Its start time when it was started; ``None``: not checked.
        boot: The boot id then; ``None``: not checked.
        host: The host it was started on; ``None``: not checked.
    """
    if pid <= 0 or (host is not None and host != socket.gethostname()):
        return False
    if not HAVE_PROC:
        return pid_ours(pid)
    if boot is not None and boot != BOOT_ID:
        return False
    stat = proc_stat(pid)
    if stat is None or stat.state in EXITED:
        return False
    return started is None or stat.start_time == started


def fingerprint(pid: int) -> str:
    """``pid``'s identity as one string to store (``"BOOT_ID:START_TIME"``), taken right
    after starting it; :func:`matches_fingerprint` checks it later.

    ``"alive"`` without ``/proc``; ``"unknown"`` when the process is already gone.
    """
    if not HAVE_PROC:
        return "alive" if pid_ours(pid) else "unknown"
    stat = proc_stat(pid)
    if stat is None or stat.state in EXITED:
        return "unknown"
    return f"{BOOT_ID}:{stat.start_time}"


def matches_fingerprint(pid: int, recorded: str) -> bool:
    """Whether ``pid`` is still the running process whose :func:`fingerprint` was
    ``recorded`` (see :func:`is_alive`)."""
    boot, colon, ticks = recorded.rpartition(":")
    if colon and ticks.isdigit():
        return HAVE_PROC and is_alive(pid, int(ticks), boot=boot)
    return recorded == "alive" and not HAVE_PROC and is_alive(pid)


def age(pid: int) -> float | None:
    """Seconds since ``pid`` started, when ``/proc`` tells."""
    stat = proc_stat(pid)
    try:
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return None if stat is None else uptime - stat.start_time / os.sysconf("SC_CLK_TCK")


def _memory_kb(pid: int) -> int:
    # PSS counts a page shared by n processes as 1/n in each: forked children that share
    # their parent's pages are not counted twice. RSS where smaps_rollup is missing.
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    try:
        pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return 0
    return pages * os.sysconf("SC_PAGE_SIZE") // 1024


def group_memory_mb(group: int) -> float | None:
    """The memory (MiB, proportional set size) that process group ``group`` uses now,
    its processes summed; ``None`` without ``/proc`` or when the group has none left."""
    usage = group_usage(group)
    return None if usage is None else usage[0]


def group_usage(group: int) -> tuple[float, float] | None:
    """What process group ``group``'s live processes use, summed: memory (MiB,
    proportional set size) now, and CPU seconds (user + system) since each started;
    ``None`` without ``/proc`` or when the group has none left."""
    if not HAVE_PROC or group <= 0:
        return None
    total, ticks, found = 0, 0, False
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        stat = proc_stat(int(entry.name))
        if stat is None or stat.group != group or stat.state in EXITED:
            continue
        found = True
        total += _memory_kb(int(entry.name))
        ticks += stat.cpu_ticks
    return (total / 1024, ticks / os.sysconf("SC_CLK_TCK")) if found else None


def signal_name(signum: int) -> str:
    """``"SIGKILL"`` for 9; ``"signal 99"`` for a number with no name."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def send_signal(pid: int, signum: int, *, group: bool = False) -> bool:
    """Send ``signum`` to ``pid`` (``group``: to its whole process group, whose id is the
    pid of a process started in a new session).

    Returns:
        Whether it was sent: not when the process is gone or not ours to signal.
    """
    if pid <= 0:  # 0 and -1 would mean our own group and every process
        return False
    try:
        if group:
            os.killpg(pid, signum)
        else:
            os.kill(pid, signum)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _wait(alive: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    return not alive()


def terminate(
    pid: int,
    alive: Callable[[], bool],
    *,
    grace_s: float,
    kill_wait_s: float = 5.0,
    group: bool = False,
) -> bool:
    """Stop a process: SIGTERM, up to ``grace_s`` to exit, then SIGKILL to its group.

    Blocks until it has exited, or ``kill_wait_s`` after the SIGKILL.

    Args:
        pid: The process; started in a new session, so its group id is its pid.
        alive: Whether it still runs (e.g. ``Popen.poll() is None``, or :func:`is_alive`
            with what was recorded): called until it says no.
        grace_s: How long it may take to clean up (drain, checkpoint) after SIGTERM.
        kill_wait_s: How long to wait for the exit after SIGKILL.
        group: SIGTERM the whole group (default: only ``pid``, which then stops its
            children itself); SIGKILL always goes to the whole group.

    Returns:
        Whether it exited from SIGTERM within the grace (``False``: it was killed).
    """
    if not alive():
        return True
    send_signal(pid, signal.SIGTERM, group=group)
    if _wait(alive, grace_s):
        return True
    send_signal(pid, signal.SIGKILL, group=True)
    _wait(alive, kill_wait_s)
    return False


def kill_group_members(group: int, marker: bytes) -> int:
    """SIGKILL the processes of process group ``group`` whose command line holds
    ``marker`` (children that outlived their parent); returns how many were signalled.

    The marker makes sure nothing but ours is killed should the group id be reused.
    Does nothing without ``/proc``.
    """
    if not HAVE_PROC:
        return 0
    killed = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        stat = proc_stat(int(entry.name))
        if stat is None or stat.group != group:
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if marker in cmdline:
            killed += send_signal(int(entry.name), signal.SIGKILL)
    return killed
