"""Process bookkeeping from ``/proc``: a server's processes, their CPU time, stopping them.

Every server is started as the leader of a new session. Some frameworks move their workers
into process groups of their own (Ray's actors do), but none leaves the session, so "the
server" is every process whose session id is the leader's pid, plus any descendant of the
leader that did call ``setsid``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name, or None if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return raw[raw.rindex(")") + 2 :].split()  # the name may hold spaces and parentheses


def _all_pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def server_pids(leader: int) -> list[int]:
    """The leader's live session members and descendants (stat fields 3-6: state ... sid)."""
    parents: dict[int, int] = {}
    members: set[int] = set()
    for pid in _all_pids():
        fields = _stat_fields(pid)
        if fields is None or fields[0] == "Z":  # zombies hold no CPU and cannot be signalled
            continue
        parents[pid] = int(fields[1])
        if int(fields[3]) == leader:
            members.add(pid)
    members.add(leader)
    grew = True
    while grew:  # close over descendants
        found = {pid for pid, ppid in parents.items() if ppid in members} - members
        members |= found
        grew = bool(found)
    return sorted(pid for pid in members if pid in parents)


def cpu_seconds(pids: list[int]) -> dict[int, float]:
    """User + system CPU time of each live pid (fields 14 and 15 of stat)."""
    times: dict[int, float] = {}
    for pid in pids:
        fields = _stat_fields(pid)
        if fields is not None:
            times[pid] = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return times


def server_cpu(leader: int) -> dict[int, float]:
    """CPU seconds of every process of the server, by pid."""
    return cpu_seconds(server_pids(leader))


def cpu_delta(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds spent between two snapshots; processes born in between count from 0."""
    return sum(t - before.get(pid, 0.0) for pid, t in after.items())


def _signal_all(pids: list[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def _wait_gone(leader: int, timeout_s: float) -> list[int]:
    deadline = time.monotonic() + timeout_s
    alive = server_pids(leader)
    while alive and time.monotonic() < deadline:
        time.sleep(0.2)
        alive = server_pids(leader)
    return alive


def stop_server(proc: subprocess.Popen[bytes], grace_s: float = 15.0) -> None:
    """SIGTERM to the leader (a clean shutdown), then to all its processes, then SIGKILL."""
    leader = proc.pid
    resume(leader)  # a stopped process would not act on SIGTERM
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace_s)
    alive = _wait_gone(leader, 3.0)  # orphans that exit on their own once the leader is gone
    if alive:
        _signal_all(alive, signal.SIGTERM)
        alive = _wait_gone(leader, 3.0)
    _signal_all(alive, signal.SIGKILL)
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def pause(leader: int) -> None:
    """SIGSTOP every process of the server, so that its idle work takes no CPU from others."""
    _signal_all(server_pids(leader), signal.SIGSTOP)


def resume(leader: int) -> None:
    _signal_all(server_pids(leader), signal.SIGCONT)
