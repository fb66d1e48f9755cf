"""Which event happened to a job: from how its worker ended (:class:`ExitStatus`, its
``result.json``, a memory kill, a server restart) or from a user's cancel, decide the
:class:`~lepton.platform.jobs._states.Change` to apply, retry policy included.

Pure decisions on a row's values: nothing here writes, signals or sleeps, so every outcome
maps to its event in a unit test.

Example:
    >>> killed = ExitStatus(signal=9)  # with attempts left  # doctest: +SKIP
    >>> decide_exit(row, killed, None, backoff=Backoff(2, 300)).event  # doctest: +SKIP
    'crashed_retryable'
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from lepton.errors import ConflictError
from lepton.platform.jobs._executor import ExitStatus
from lepton.platform.jobs._specs import DETERMINISTIC_EXIT
from lepton.platform.jobs._states import TRANSITIONS, Change
from lepton.storage.schema import JobRow

__all__ = ["Backoff", "decide_cancel", "decide_exit", "describe_exit"]


@dataclass(frozen=True)
class Backoff:
    """How long a crashed job waits before its retry: ``first_s``, doubled for each further
    attempt, at most ``max_s``."""

    first_s: float
    max_s: float

    def delay(self, attempts: int) -> float:
        """The wait after attempt number ``attempts`` (1 for the first) crashed."""
        return float(min(self.first_s * 2 ** max(attempts - 1, 0), self.max_s))


def decide_exit(
    row: JobRow,
    status: ExitStatus,
    result: dict[str, Any] | None,
    *,
    backoff: Backoff,
    over_memory: str | None = None,
    restarted: bool = False,
    now: float | None = None,
) -> Change:
    """The event for an active job whose worker has ended.

    In order: ``{"ok": true}`` succeeds (even while cancelling: it finished first); a
    cancelling job is ``stopped``; a worker killed for its memory fails; a deterministic
    failure (exit code 3, or ``"deterministic"`` in the result) fails without a retry;
    anything else is a crash, retried after a backoff while attempts remain (at once
    after a restart), else ``lost`` (the worker vanished while the server was down) or
    failed.

    Args:
        row: The job (running or cancelling); only read.
        status: How the worker ended (unknown for a worker this server did not start).
        result: Its ``result.json``, ``None`` if missing or unreadable.
        backoff: The retry policy.
        over_memory: Why the scheduler killed it for its memory, if it did.
        restarted: Settled by a server that found the worker gone at its start.
        now: The time (default: now).
    """
    now = time.time() if now is None else now
    if result is not None and result.get("ok") is True:
        run_id = result.get("run_id")
        return Change(
            "exited_ok",
            {
                "result": result,
                "error": None,
                "run_id": run_id if isinstance(run_id, int) else None,
            },
        )
    if row.state == "cancelling":
        return Change("stopped")
    if over_memory is not None:
        return Change("memory_exceeded", {"error": over_memory})
    found = result or {}
    if status.code == DETERMINISTIC_EXIT or found.get("deterministic"):
        return Change(
            "failed_deterministic",
            {"error": str(found.get("error") or f"failed ({status.describe()})")},
        )
    pid = (row.handle or {}).get("pid")
    vanished = restarted and result is None
    reason = (
        f"the worker (pid {pid}) was gone when the server restarted"
        if vanished
        else str(found.get("error") or describe_exit(status))
    )
    if row.attempts <= row.max_retries:
        wait = 0.0 if restarted else backoff.delay(row.attempts)
        return Change(
            "crashed_retryable",
            {"handle": {}, "not_before": now + wait, "error": f"attempt {row.attempts}: {reason}"},
            note=f"attempt {row.attempts} ended: {reason}; retrying in {wait:g}s",
        )
    if vanished:
        return Change(
            "process_lost",
            {
                "error": f"the worker (pid {pid}) disappeared while the server was down and no "
                f"retries are left (max_retries={row.max_retries}); submit it again"
            },
        )
    return Change(
        "retries_exhausted",
        {
            "error": f"{reason}; gave up after {row.attempts} attempts "
            f"(max_retries={row.max_retries})"
        },
    )


def decide_cancel(row: JobRow, user: str, grace_s: float) -> Change:
    """The change for ``user``'s cancel: a queued job ends at once, a running one gets
    SIGTERM (then SIGKILL after ``grace_s``), a cancelling one SIGKILL now.

    Raises:
        ConflictError: The job has already ended.
    """
    if (row.state, "cancel_requested") not in TRANSITIONS:
        raise ConflictError(
            f"job {row.id} has already ended ({row.state}); only queued or running jobs can "
            f"be cancelled"
        )
    if row.state == "queued":
        return Change("cancel_requested", {"error": f"cancelled by {user} before it started"})
    if row.state == "cancelling":
        return Change("cancel_requested", note=f"cancelled by {user}: SIGKILL")
    return Change(
        "cancel_requested",
        {"error": f"cancelled by {user}"},
        note=f"cancelled by {user}: SIGTERM, SIGKILL in {grace_s:g}s",
    )


def describe_exit(status: ExitStatus) -> str:
    """How a worker ended, for an error message."""
    if status == ExitStatus():
        return "the worker ended without writing its result"
    return status.describe()
