"""The job state machine: which event moves a job from which state to which, and the one
function that applies an event to a job's row.

States are :data:`~lepton.platform.jobs._specs.JobState` (the one vocabulary), events
are :data:`Event`, and :data:`TRANSITIONS` is the whole machine. In short: ``queued``
-> ``running`` (``started``) -> ``succeeded`` | ``failed`` | ``lost``, or back to
``queued`` after a crash while attempts remain (``crashed_retryable``); a cancel takes a
queued job to ``cancelled`` and a running one to ``cancelling``, then ``cancelled`` once
its worker has ``stopped``. ``adopted`` (a restarted server takes over a live worker) and
a repeated ``cancel_requested`` (kill it now) keep the state. An end state has no way out.

Which event happened is decided elsewhere (:mod:`lepton.platform.jobs._outcomes`), and
what follows from it (signals, slots, retries) is the scheduler's; this module only checks
and writes.

Example:
    >>> next_state("queued", "started")
    'running'
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias, get_args

from sqlalchemy import inspect

from lepton.errors import JobError
from lepton.platform.jobs._files import JobFolder
from lepton.platform.jobs._specs import TERMINAL, JobState
from lepton.storage import Database
from lepton.storage.schema import JobRow

__all__ = ["EVENTS", "TRANSITIONS", "Applied", "Change", "Event", "next_state", "transition"]

Event: TypeAlias = Literal[
    "started",  # the scheduler started a worker for the attempt
    "start_failed",  # the worker could not be started at all
    "cancel_requested",  # a user cancelled (again: kill it now)
    "adopted",  # a restarted server took over a worker that is still running
    "exited_ok",  # the worker wrote {"ok": true}
    "stopped",  # a cancelled worker ended
    "memory_exceeded",  # the worker used more memory than the job reserved and was killed
    "failed_deterministic",  # a failure that a retry would repeat (exit code 3)
    "crashed_retryable",  # a crash (a signal, an exception) with attempts left
    "retries_exhausted",  # a crash with no attempts left
    "process_lost",  # the worker vanished while the server was down, no attempts left
]
EVENTS: tuple[Event, ...] = get_args(Event)

TRANSITIONS: dict[tuple[JobState, Event], JobState] = {
    ("queued", "started"): "running",
    ("queued", "start_failed"): "failed",
    ("queued", "cancel_requested"): "cancelled",
    ("running", "cancel_requested"): "cancelling",
    ("running", "adopted"): "running",
    ("running", "exited_ok"): "succeeded",
    ("running", "memory_exceeded"): "failed",
    ("running", "failed_deterministic"): "failed",
    ("running", "crashed_retryable"): "queued",
    ("running", "retries_exhausted"): "failed",
    ("running", "process_lost"): "lost",
    ("cancelling", "cancel_requested"): "cancelling",
    ("cancelling", "adopted"): "cancelling",
    ("cancelling", "exited_ok"): "succeeded",  # it finished before the signal arrived
    ("cancelling", "stopped"): "cancelled",
}

_MAX_ERROR = 4000  # the column's width


def next_state(state: str, event: Event) -> JobState:
    """The state ``event`` moves a job in ``state`` to.

    Raises:
        JobError: The table has no such transition (an end state never changes).
    """
    found = TRANSITIONS.get((state, event))  # type: ignore[arg-type]
    if found is None:
        allowed = sorted(e for s, e in TRANSITIONS if s == state)
        raise JobError(
            f"a {state} job cannot take the event {event!r}"
            + (f"; from {state} only {', '.join(allowed)}" if allowed else "; it has ended")
            + " (a scheduler bug: report it with the job's log)"
        )
    return found


@dataclass(frozen=True)
class Change:
    """An event and what it writes besides the state.

    Attributes:
        event: What happened.
        fields: Columns of the job's row to set (``error``, ``result``, ``handle``...);
            ``ended_at`` is set by itself when the job reaches an end state.
        note: The line for the job's log; ``None``: ``"job <state>: <error>"`` for an end
            state and nothing otherwise; ``""``: nothing.
    """

    event: Event
    fields: Mapping[str, Any] = field(default_factory=dict)
    note: str | None = None


@dataclass(frozen=True)
class Applied:
    """A change that was written: the event, the states around it, and the executor's
    handle the job had before it (what a signal or a cleanup needs)."""

    job_id: int
    event: Event
    before: JobState
    after: JobState
    handle: dict[str, Any]


_COLUMNS = frozenset(c.key for c in inspect(JobRow).column_attrs) - {"id", "state"}


def transition(
    db: Database,
    folder: JobFolder,
    job_id: int,
    decide: Callable[[JobRow], Change | None],
) -> Applied | None:
    """Apply one event to a job: lock its row, let ``decide`` pick the change from it,
    check the transition, write the state and fields in the same transaction, then
    append the change's note to the job's log.

    Args:
        db: The metadata database.
        folder: The job's folder (for the note).
        job_id: The job.
        decide: Given the locked row, the change to make, or ``None`` for none. It may
            raise to refuse (the transaction is rolled back).

    Returns:
        What was applied; ``None`` when there is no such job or ``decide`` chose nothing.

    Raises:
        JobError: The event is not allowed in the job's state; nothing is written.
    """
    with db.session() as s:
        row = s.get(JobRow, job_id, with_for_update=True)
        if row is None:
            return None
        change = decide(row)
        if change is None:
            return None
        unknown = sorted(set(change.fields) - _COLUMNS)
        if unknown:
            raise JobError(f"a job has no columns {unknown} to set (a scheduler bug)")
        before: JobState = row.state  # type: ignore[assignment]
        after = next_state(before, change.event)
        handle = dict(row.handle or {})
        for name, value in change.fields.items():
            setattr(row, name, value)
        row.state = after
        if row.error is not None:
            row.error = row.error[:_MAX_ERROR]
        if after in TERMINAL:
            row.ended_at = time.time()
        note = change.note
        if note is None:
            note = (
                f"job {after}" + (f": {row.error}" if row.error else "")
                if after in TERMINAL
                else ""
            )
    folder.note(note)
    return Applied(job_id, change.event, before, after, handle)
