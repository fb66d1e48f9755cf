"""Whether a process still runs: one rule for every part of Lepton that records a pid.

Two questions, answered apart:

* :func:`pid_alive`: does the pid name a process that has not exited, whoever owns it?
  A ``PermissionError`` from ``kill(pid, 0)`` means it exists but belongs to another
  user: alive. A zombie has exited (only its exit status waits to be collected): not
  alive. Tracking and the registry ask this of the process that owns a run or a pending
  version: another user's process with that pid may be that owner, so it is left alone.
* :func:`pid_ours`: alive *and* ours to signal. A process this user started can always be
  signalled by this user, so another user's process with that pid is a later program that
  reused it. The platform asks this (through its fingerprint check, which also compares
  start times, in :mod:`lepton.platform._procs`) of the workers it started.

Example:
    >>> import os
    >>> pid_alive(os.getpid()) and pid_ours(os.getpid())
    True
    >>> pid_alive(0)
    False
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["BOOT_ID", "HAVE_PROC", "ProcStat", "pid_alive", "pid_ours", "proc_stat", "start_time"]

HAVE_PROC = Path("/proc/self/stat").exists()
EXITED = frozenset({"Z", "X", "x"})  # zombie, dead ("x" on Linux 2.6.33 to 3.13)


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


BOOT_ID = _boot_id()  # a new one at every boot: start times only compare within a boot


@dataclass(frozen=True)
class ProcStat:
    """What ``/proc/<pid>/stat`` tells of a process (fields 3, 5, 14, 15 and 22 of proc(5))."""

    state: str  # R, S, D, ... or Z (zombie), X (dead)
    group: int  # its process group
    start_time: int  # clock ticks after boot
    cpu_ticks: int = 0  # user + system CPU time it used, clock ticks


def proc_stat(pid: int) -> ProcStat | None:
    """``/proc``'s line of ``pid``, ``None`` when there is none (no such pid, no ``/proc``,
    or a ``/proc`` mounted with ``hidepid`` that hides other users' processes).

    A zombie still has one, until its parent reaps it.
    """
    if pid <= 0:
        return None
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rpartition(")")[2].split()  # the name in (...) may hold spaces and ")"
    try:
        return ProcStat(state=fields[0], group=int(fields[2]), start_time=int(fields[19]),
                        cpu_ticks=int(fields[11]) + int(fields[12]))  # fmt: skip
    except (IndexError, ValueError):
        return None


def start_time(pid: int) -> int | None:
    """When ``pid`` started, in clock ticks after boot; ``None`` without ``/proc``."""
    stat = proc_stat(pid)
    return None if stat is None else stat.start_time


def _signal_zero(pid: int) -> bool | None:
    """``True``: exists and ours to signal; ``False``: no such process; ``None``: exists,
    another user's."""
    if pid <= 0:  # 0 and -1 would mean our own group and every process
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return None
    return True


def _exited(pid: int) -> bool:
    stat = proc_stat(pid)
    return stat is not None and stat.state in EXITED


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` is a process that has not exited, owned by anyone.

    A pid alone cannot tell a later process that reused it; when that matters, record the
    start time too (see :mod:`lepton.platform._procs`).
    """
    return _signal_zero(pid) is not False and not _exited(pid)


def pid_ours(pid: int) -> bool:
    """Whether ``pid`` is a process that has not exited and that this user may signal:
    one this user could have started (another user's process is not ours)."""
    return _signal_zero(pid) is True and not _exited(pid)
