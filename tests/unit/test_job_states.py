"""The job state machine: the transition table walked whole, every other (state, event)
pair refused, the function that applies an event on a real SQLite database, and the
scheduler's decisions for each way a worker can end (real processes included)."""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers import wait_until
from lepton.errors import ConflictError, JobError
from lepton.platform.jobs._executor import ExitStatus, LocalExecutor
from lepton.platform.jobs._files import JobFolder
from lepton.platform.jobs._outcomes import Backoff, decide_cancel, decide_exit
from lepton.platform.jobs._specs import ACTIVE, STATES, TERMINAL
from lepton.platform.jobs._states import (
    EVENTS,
    TRANSITIONS,
    Change,
    next_state,
    transition,
)
from lepton.storage import Database
from lepton.storage.schema import JobRow

BACKOFF = Backoff(first_s=2.0, max_s=5.0)
NOW = 1_000_000.0


# -- the table --------------------------------------------------------------------------
def test_every_state_is_reachable_from_queued():
    seen, frontier = {"queued"}, ["queued"]
    while frontier:
        state = frontier.pop()
        for (source, _), target in TRANSITIONS.items():
            if source == state and target not in seen:
                seen.add(target)
                frontier.append(target)
    assert seen == set(STATES)


def test_end_states_have_no_way_out_and_every_other_state_has_one():
    sources = {source for source, _ in TRANSITIONS}
    assert sources.isdisjoint(TERMINAL)
    assert sources | TERMINAL == set(STATES), "a state with no way out is an end state"


def test_the_table_speaks_the_one_vocabulary():
    assert {s for s, _ in TRANSITIONS} | set(TRANSITIONS.values()) <= set(STATES)
    assert {event for _, event in TRANSITIONS} == set(EVENTS), "every event is used"


@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize("event", EVENTS)
def test_every_pair_outside_the_table_is_refused(state: str, event: Any):
    if (state, event) in TRANSITIONS:
        assert next_state(state, event) == TRANSITIONS[(state, event)]  # type: ignore[index]
        return
    with pytest.raises(JobError, match=rf"a {state} job cannot take the event '{event}'"):
        next_state(state, event)


def test_a_refusal_says_what_the_state_allows():
    with pytest.raises(JobError, match=r"from queued only cancel_requested, start_failed, started"):
        next_state("queued", "exited_ok")
    with pytest.raises(JobError, match=r"'started'; it has ended"):
        next_state("succeeded", "started")


# -- applying an event to a row ---------------------------------------------------------
@pytest.fixture
def sqlite_db(tmp_path: Path) -> Iterator[Database]:
    database = Database(f"sqlite:///{tmp_path / 'states.db'}")
    database.upgrade()
    yield database
    database.dispose()


def _job(db: Database, state: str = "queued", **fields: Any) -> int:
    with db.session() as s:
        row = JobRow(
            kind="evaluate", spec={}, state=state, priority=0, cpus=1.0, gpus=0,
            memory_mb=64, attempts=0, max_retries=2, executor="local", handle={},
            created_by="alice", created_at=NOW, **fields,
        )  # fmt: skip
        s.add(row)
        s.flush()
        return row.id


def _row(db: Database, job_id: int) -> JobRow:
    with db.session() as s:
        row = s.get(JobRow, job_id)
        assert row is not None
        return row


def _log(folder: JobFolder) -> str:
    path = folder.path / "log.txt"
    return path.read_text() if path.exists() else ""


def test_transition_writes_the_state_and_fields_and_notes_end_states(
    sqlite_db: Database, tmp_path: Path
):
    job_id = _job(sqlite_db)
    folder = JobFolder(tmp_path / "jobs", job_id)
    started = Change("started", {"attempts": 1, "started_at": NOW, "handle": {"pid": 7}}, "")
    applied = transition(sqlite_db, folder, job_id, lambda row: started)
    assert applied is not None
    assert (applied.event, applied.before, applied.after, applied.handle) == (
        "started", "queued", "running", {},
    )  # fmt: skip
    row = _row(sqlite_db, job_id)
    assert (row.state, row.attempts, row.started_at, row.handle) == ("running", 1, NOW, {"pid": 7})
    assert row.ended_at is None
    assert _log(folder) == "", "an empty note writes nothing"

    failed = Change("failed_deterministic", {"error": "x" * 5000})
    applied = transition(sqlite_db, folder, job_id, lambda row: failed)
    assert applied is not None
    assert applied.handle == {"pid": 7}, "the handle before the change, for the signals"
    row = _row(sqlite_db, job_id)
    assert row.state == "failed"
    assert row.error == "x" * 4000, "cut to the column's width"
    assert row.ended_at is not None
    assert f"job failed: {'x' * 4000}" in _log(folder)


def test_transition_refuses_an_event_the_state_does_not_take_and_writes_nothing(
    sqlite_db: Database, tmp_path: Path
):
    job_id = _job(sqlite_db, state="succeeded", ended_at=NOW)
    folder = JobFolder(tmp_path / "jobs", job_id)
    retry = Change("crashed_retryable", {"error": "attempt 1: boom"}, note="retrying")
    with pytest.raises(JobError, match="a succeeded job cannot take the event 'crashed_retryable'"):
        transition(sqlite_db, folder, job_id, lambda row: retry)
    row = _row(sqlite_db, job_id)
    assert (row.state, row.error, row.ended_at) == ("succeeded", None, NOW)
    assert _log(folder) == ""
    with pytest.raises(JobError, match=r"no columns \['colour'\]"):
        transition(sqlite_db, folder, job_id, lambda row: Change("adopted", {"colour": 1}))


def test_transition_of_a_missing_job_or_no_change_does_nothing(sqlite_db: Database, tmp_path: Path):
    folder = JobFolder(tmp_path / "jobs", 99)
    assert transition(sqlite_db, folder, 99, lambda row: Change("started")) is None
    job_id = _job(sqlite_db)
    assert transition(sqlite_db, folder, job_id, lambda row: None) is None
    assert _row(sqlite_db, job_id).state == "queued"


# -- deciding the event -----------------------------------------------------------------
def _active(state: str = "running", attempts: int = 1, max_retries: int = 2) -> JobRow:
    return JobRow(
        id=5, state=state, attempts=attempts, max_retries=max_retries, handle={"pid": 4242}
    )


KILLED = ExitStatus(signal=signal.SIGKILL)
CASES: list[tuple[str, JobRow, ExitStatus, dict[str, Any] | None, dict[str, Any], str, str]] = [
    # (outcome, row, status, result, options, event, a part of the error or note)
    ("ok", _active(), ExitStatus(code=0), {"ok": True, "run_id": 3}, {}, "exited_ok", ""),
    ("ok while cancelling", _active("cancelling"), ExitStatus(code=0), {"ok": True}, {},
     "exited_ok", ""),
    ("cancelled worker ends", _active("cancelling"), ExitStatus(signal=signal.SIGTERM), None,
     {}, "stopped", ""),
    ("over memory", _active(), KILLED, None, {"over_memory": "used 900 MiB"},
     "memory_exceeded", "used 900 MiB"),
    ("exit code 3", _active(), ExitStatus(code=3), None, {}, "failed_deterministic",
     "failed (exit code 3)"),
    ("deterministic result", _active(), ExitStatus(code=1),
     {"ok": False, "deterministic": True, "error": "no model m"}, {}, "failed_deterministic",
     "no model m"),
    ("oom kill, attempts left", _active(), KILLED, None, {}, "crashed_retryable",
     "attempt 1: killed by SIGKILL (out of memory?)"),
    ("exception, attempts left", _active(attempts=2), ExitStatus(code=1),
     {"ok": False, "error": "CUDA error"}, {}, "crashed_retryable", "attempt 2: CUDA error"),
    ("no result", _active(), ExitStatus(), None, {}, "crashed_retryable",
     "the worker ended without writing its result"),
    ("crash, no attempts left", _active(attempts=3), KILLED, None, {}, "retries_exhausted",
     "gave up after 3 attempts (max_retries=2)"),
    ("gone at restart, attempts left", _active(), ExitStatus(), None, {"restarted": True},
     "crashed_retryable", "(pid 4242) was gone when the server restarted"),
    ("gone at restart, none left", _active(attempts=3), ExitStatus(), None,
     {"restarted": True}, "process_lost", "disappeared while the server was down"),
    ("failed while down, none left", _active(attempts=3), ExitStatus(),
     {"ok": False, "error": "boom"}, {"restarted": True}, "retries_exhausted", "boom; gave up"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("row", "status", "result", "options", "event", "says"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_each_way_a_worker_ends_maps_to_its_event(
    row: JobRow,
    status: ExitStatus,
    result: dict[str, Any] | None,
    options: dict[str, Any],
    event: str,
    says: str,
):
    change = decide_exit(row, status, result, backoff=BACKOFF, now=NOW, **options)
    assert change.event == event
    next_state(row.state, change.event)  # the table takes it
    assert says in f"{change.fields.get('error', '')} {change.note or ''}"


def test_a_success_keeps_the_result_and_a_retry_waits_its_backoff():
    ok = decide_exit(_active(), ExitStatus(code=0), {"ok": True, "run_id": 3}, backoff=BACKOFF)
    assert ok.fields == {"result": {"ok": True, "run_id": 3}, "error": None, "run_id": 3}
    waits = [
        decide_exit(_active(attempts=n, max_retries=5), KILLED, None, backoff=BACKOFF, now=NOW)
        for n in (1, 2, 3)
    ]
    assert [c.fields["not_before"] - NOW for c in waits] == [2.0, 4.0, 5.0], "doubled, capped"
    assert all(c.fields["handle"] == {} for c in waits)
    assert waits[0].note == "attempt 1 ended: killed by SIGKILL (out of memory?); retrying in 2s"
    restarted = decide_exit(_active(), ExitStatus(), None, backoff=BACKOFF, now=NOW, restarted=True)
    assert restarted.fields["not_before"] == NOW, "after a restart the retry starts at once"


@pytest.mark.parametrize(
    ("state", "after", "error", "note"),
    [
        ("queued", "cancelled", "cancelled by bob before it started", None),
        ("running", "cancelling", "cancelled by bob", "cancelled by bob: SIGTERM, SIGKILL in 10s"),
        ("cancelling", "cancelling", None, "cancelled by bob: SIGKILL"),
    ],
)
def test_a_cancel_maps_to_its_event(state: str, after: str, error: str | None, note: str | None):
    change = decide_cancel(_active(state), "bob", 10.0)
    assert change.event == "cancel_requested"
    assert next_state(state, change.event) == after
    assert change.fields.get("error") == error
    assert change.note == note


@pytest.mark.parametrize("state", sorted(TERMINAL))
def test_cancelling_an_ended_job_is_a_conflict(state: str):
    with pytest.raises(ConflictError, match=rf"job 5 has already ended \({state}\)"):
        decide_cancel(_active(state), "bob", 10.0)


REAL_ENDINGS = [
    ("writes ok", "write_ok()", "exited_ok"),
    ("exits 3", "sys.exit(3)", "failed_deterministic"),
    ("raises", "raise RuntimeError('boom')", "crashed_retryable"),
    ("killed", "os.kill(os.getpid(), signal.SIGKILL)", "crashed_retryable"),
]
WORKER = """\
import json, os, signal, sys
def write_ok():
    with open("result.json", "w") as f:
        json.dump({"ok": True}, f)
"""


@pytest.mark.parametrize(
    ("body", "event"), [e[1:] for e in REAL_ENDINGS], ids=[e[0] for e in REAL_ENDINGS]
)
def test_a_real_worker_ending_maps_to_its_event(tmp_path: Path, body: str, event: str):
    executor = LocalExecutor(worker=(sys.executable, "-c", WORKER + body))
    folder = JobFolder(tmp_path / "jobs", 5)
    handle = executor.start(5, {}, folder.path, {})
    status = wait_until(lambda: executor.poll(handle), timeout=30, message="the worker never ended")
    change = decide_exit(_active(), status, folder.result(), backoff=BACKOFF, now=time.time())
    assert change.event == event, (status, _log(folder))
    assert next_state("running", change.event) in (*ACTIVE, *TERMINAL, "queued")
