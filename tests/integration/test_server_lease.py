"""One managing server per database: the lease, on SQLite and PostgreSQL.

A second server on the same database must not adopt, restart or mark lost what the first
one runs; a server that is gone (kill -9, or silent on another host) is replaced.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time

import pytest
from sqlalchemy import update

from helpers import wait_until
from lepton.platform import _lease
from lepton.platform._lease import LEASE_TTL_S, ManagerLease, ServerBusyError
from lepton.platform._procs import fingerprint
from lepton.storage import Database
from lepton.storage.schema import ServerLeaseRow

pytestmark = pytest.mark.integration


def holder(db: Database) -> ServerLeaseRow | None:
    with db.session() as s:
        row = s.get(ServerLeaseRow, 1)
        if row is not None:
            s.expunge(row)
        return row


def test_a_second_server_is_refused_while_the_first_runs(db: Database) -> None:
    first = ManagerLease(db, "http://127.0.0.1:8000")
    first.acquire()
    first.acquire()  # holding it already is a renewal, not a conflict
    second = ManagerLease(db, "http://127.0.0.1:8001")
    with pytest.raises(ServerBusyError, match="already manages") as refused:
        second.acquire()
    assert refused.value.code == "server_busy"
    assert refused.value.status == 409
    assert "http://127.0.0.1:8000" in refused.value.message
    assert "already manages" in refused.value.message
    row = holder(db)
    assert row is not None
    assert row.instance == first.instance
    first.release()
    assert holder(db) is None
    second.acquire()
    row = holder(db)
    assert row is not None
    assert row.url == "http://127.0.0.1:8001"
    second.release()


def test_a_holder_killed_on_this_host_is_replaced_at_once(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        with db.session() as s:
            now = time.time()
            s.add(ServerLeaseRow(id=1, instance="old", host=_lease.socket.gethostname(),
                              pid=gone.pid, process=fingerprint(gone.pid), url="http://old",
                              acquired_at=now, heartbeat=now))  # fmt: skip
        with pytest.raises(ServerBusyError, match="already manages"):  # alive: refused
            ManagerLease(db, "http://new").acquire()
    finally:
        gone.send_signal(signal.SIGKILL)
        gone.wait()
    new = ManagerLease(db, "http://new")
    new.acquire()  # its heartbeat is fresh, but the process is gone: no wait
    row = holder(db)
    assert row is not None
    assert row.instance == new.instance
    assert any("which is gone" in r.message for r in caplog.records)
    new.release()


def test_a_holder_on_another_host_is_replaced_only_when_silent(db: Database) -> None:
    with db.session() as s:
        now = time.time()
        s.add(ServerLeaseRow(id=1, instance="remote", host="another-host.invalid", pid=1,
                          process="x:1", url="http://10.0.0.7:8000",
                          acquired_at=now, heartbeat=now))  # fmt: skip
    with pytest.raises(ServerBusyError, match=r"another-host\.invalid"):
        ManagerLease(db, "http://new").acquire()
    with db.session() as s:
        s.execute(update(ServerLeaseRow).values(heartbeat=time.time() - LEASE_TTL_S - 1))
    new = ManagerLease(db, "http://new")
    new.acquire()
    row = holder(db)
    assert row is not None
    assert row.instance == new.instance
    assert row.pid > 1
    new.release()


def _race(leases: list[ManagerLease]) -> dict[int, str]:
    start = threading.Barrier(len(leases))
    outcome: dict[int, str] = {}

    def one(i: int) -> None:
        start.wait()
        try:
            leases[i].acquire()
            outcome[i] = "won"
        except ServerBusyError:
            outcome[i] = "refused"

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(leases))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return outcome


def test_servers_starting_together_elect_exactly_one(db: Database) -> None:
    for _ in range(5):
        leases = [ManagerLease(db, f"http://127.0.0.1:{8000 + i}") for i in range(4)]
        outcome = _race(leases)
        assert sorted(outcome.values()) == ["refused"] * 3 + ["won"]
        winner = next(i for i, o in outcome.items() if o == "won")
        row = holder(db)
        assert row is not None
        assert row.instance == leases[winner].instance
        leases[winner].release()


def test_the_heartbeat_renews_and_a_taken_over_lease_stops_managing(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_lease, "HEARTBEAT_S", 0.05)
    lost = threading.Event()
    lease = ManagerLease(db, "http://127.0.0.1:8000", on_lost=lost.set)
    lease.acquire()
    first = holder(db)
    assert first is not None
    wait_until(
        lambda: (row := holder(db)) is None or row.heartbeat != first.heartbeat,
        message="the heartbeat never renewed the lease",
    )
    assert lease.held
    assert not lost.is_set()
    with db.session() as s:  # what another server does when this one looked gone
        s.execute(update(ServerLeaseRow).values(instance="usurper"))
    assert lost.wait(10), "a lease taken over was not noticed"
    wait_until(lambda: not lease.held, 5, message="the lease was still held")
    lease.release()  # never deletes the new holder's row
    row = holder(db)
    assert row is not None
    assert row.instance == "usurper"
