"""The process helpers that jobs and deployments share: telling a process apart from a
later one with the same pid, and stopping one with a grace; and the one liveness rule
(lepton._procs) that tracking and the registry use too. Real (short) processes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from lepton import _procs as liveness
from lepton.platform import _procs

pytestmark = pytest.mark.skipif(not _procs.HAVE_PROC, reason="needs /proc (Linux)")

SLEEP = "import time; time.sleep(60)"
IGNORE_TERM = """\
import signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("ready", flush=True)
time.sleep(60)
"""


def _start(code: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", code], start_new_session=True, stdout=subprocess.PIPE
    )


def _until_exited(pid: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        stat = _procs.proc_stat(pid)
        if stat is None or stat.state in ("Z", "X"):
            return
        time.sleep(0.01)


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    process = _start(SLEEP)
    yield process
    process.kill()
    process.wait()
    assert process.stdout is not None
    process.stdout.close()


def test_a_running_process_is_alive_only_with_what_was_recorded(
    sleeper: subprocess.Popen[bytes],
) -> None:
    pid, started = sleeper.pid, _procs.start_time(sleeper.pid)
    assert started is not None
    assert _procs.is_alive(pid, started, boot=_procs.BOOT_ID, host=socket.gethostname())
    assert _procs.is_alive(pid)  # nothing recorded: nothing checked
    assert not _procs.is_alive(pid, started + 1), "another process that reuses the pid"
    assert not _procs.is_alive(pid, started, boot="another-boot")
    assert not _procs.is_alive(pid, started, host="another-host")
    assert not _procs.is_alive(0)
    assert not _procs.is_alive(-1)
    ident = _procs.fingerprint(pid)
    assert _procs.matches_fingerprint(pid, ident)
    assert not _procs.matches_fingerprint(pid, f"{_procs.BOOT_ID}:{started + 1}")
    assert not _procs.matches_fingerprint(pid, "unknown")
    stat = _procs.proc_stat(pid)
    assert stat is not None
    assert stat.group == pid  # a new session: its own process group
    age = _procs.age(pid)
    assert age is not None
    assert 0 <= age < 60


def test_a_zombie_is_not_alive_and_its_exit_status_stays_with_its_popen(
    sleeper: subprocess.Popen[bytes],
) -> None:
    started = _procs.start_time(sleeper.pid)
    ident = _procs.fingerprint(sleeper.pid)
    assert _procs.send_signal(sleeper.pid, signal.SIGKILL)
    _until_exited(sleeper.pid)  # a SIGKILL takes effect asynchronously
    assert not _procs.is_alive(sleeper.pid, started)
    assert not _procs.matches_fingerprint(sleeper.pid, ident)
    assert _procs.fingerprint(sleeper.pid) == "unknown"
    assert sleeper.wait() == -signal.SIGKILL  # not reaped behind the Popen's back
    assert not _procs.send_signal(sleeper.pid, signal.SIGTERM)  # gone: nothing sent


def test_terminate_gives_a_grace_then_kills_the_group() -> None:
    polite = _start(SLEEP)
    assert _procs.terminate(polite.pid, lambda: polite.poll() is None, grace_s=10)
    assert polite.returncode == -signal.SIGTERM

    stubborn = _start(IGNORE_TERM)
    assert stubborn.stdout is not None
    assert stubborn.stdout.readline() == b"ready\n"  # SIGTERM is ignored from now on
    assert not _procs.terminate(stubborn.pid, lambda: stubborn.poll() is None, grace_s=0.5)
    assert stubborn.returncode == -signal.SIGKILL
    assert _procs.terminate(stubborn.pid, lambda: stubborn.poll() is None, grace_s=1)
    for process in (polite, stubborn):
        assert process.stdout is not None
        process.stdout.close()


def test_signal_names() -> None:
    assert _procs.signal_name(signal.SIGKILL) == "SIGKILL"
    assert _procs.signal_name(99) == "signal 99"


def test_a_pid_is_alive_until_it_exits_and_ours_when_we_may_signal_it(
    sleeper: subprocess.Popen[bytes],
) -> None:
    assert liveness.pid_alive(os.getpid())
    assert liveness.pid_ours(os.getpid())
    assert liveness.pid_alive(sleeper.pid)
    assert liveness.pid_ours(sleeper.pid)
    assert not liveness.pid_alive(0)
    assert not liveness.pid_alive(-1)
    sleeper.kill()
    _until_exited(sleeper.pid)
    assert not liveness.pid_alive(sleeper.pid), "a zombie has exited"
    assert not liveness.pid_ours(sleeper.pid)
    sleeper.wait()
    assert not liveness.pid_alive(sleeper.pid), "reaped: no such process"


# Asked as root's child that drops to "nobody" after importing, so that kill(pid, 0)
# meets another user's process (pid 1, and the root test process itself).
_AS_NOBODY = """\
import os, sys
from lepton._procs import pid_alive, pid_ours
if os.getuid() == 0:
    os.setgid(65534)
    os.setuid(65534)
pids = (1, int(sys.argv[1]))
print([pid_alive(p) for p in pids], [pid_ours(p) for p in pids])
"""


def test_another_users_process_is_alive_but_not_ours() -> None:
    if os.getuid() != 0:
        assert liveness.pid_alive(1), "init runs, as root"
        assert not liveness.pid_ours(1), "but it is not ours to signal"
        return
    out = subprocess.run(
        [sys.executable, "-c", _AS_NOBODY, str(os.getpid())],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    assert out.stdout.split("] [") == ["[True, True", "False, False]\n"]


BURN = """\
import time
print("ready", flush=True)
deadline = time.process_time() + 0.4
while time.process_time() < deadline:
    pass
print("burnt", flush=True)
time.sleep(60)
"""


def test_a_group_s_memory_and_cpu_seconds_are_its_processes_summed(
    sleeper: subprocess.Popen[bytes],
) -> None:
    """What the monitor reads of a deployment's group: a sleeping process uses memory and
    next to no CPU; one that burns 0.4 s of CPU shows at least that much."""
    idle = _procs.group_usage(sleeper.pid)
    assert idle is not None
    memory_mb, cpu_s = idle
    assert 0 <= memory_mb < 500  # its proportional set size (tiny while it still starts)
    assert 0 <= cpu_s < 0.4
    assert _procs.group_memory_mb(sleeper.pid) == pytest.approx(memory_mb, rel=0.5)
    burner = _start(BURN)
    try:
        assert burner.stdout is not None
        assert burner.stdout.readline() == b"ready\n"
        before = _procs.group_usage(burner.pid)
        assert burner.stdout.readline() == b"burnt\n"
        after = _procs.group_usage(burner.pid)
        assert before is not None
        assert after is not None
        assert after[1] - before[1] >= 0.35  # clock ticks: 10 ms steps
    finally:
        burner.kill()
        burner.wait()
        assert burner.stdout is not None
        burner.stdout.close()
    assert _procs.group_usage(burner.pid) is None  # the group has no process left
    assert _procs.group_usage(0) is None
