"""One managing server per database: the lease.

A server that manages jobs and deployments adopts, restarts and marks lost what it finds
in the database when it starts. Two of them on one database would fight over the same
processes: the second would restart the first one's deployments and requeue its jobs.
So the managing server holds the lease, one row in ``server_lease``, and a second one
refuses to start with a message naming the first.

The row is taken over only when its holder is gone: on the same host, when its process
(pid plus start time, see :mod:`lepton.platform._procs`) no longer runs, which a restart
after ``kill -9`` finds at once; on another host, when its heartbeat is older than
:data:`LEASE_TTL_S` (hosts' clocks must agree to within a few seconds). Every write is a
compare-and-swap on the holder's ``instance``, so two servers starting together cannot
both win, on SQLite or PostgreSQL.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable

from sqlalchemy import delete, update
from sqlalchemy.exc import IntegrityError

from lepton.errors import ServerBusyError
from lepton.platform._procs import fingerprint, matches_fingerprint
from lepton.storage import Database
from lepton.storage.schema import ServerLeaseRow

__all__ = ["HEARTBEAT_S", "LEASE_TTL_S", "ManagerLease", "ServerBusyError"]

LEASE_TTL_S = 30.0  # a holder on another host silent this long is taken as gone
HEARTBEAT_S = 5.0
log = logging.getLogger("lepton.platform")


class ManagerLease:
    """The lease of one server (a new ``instance`` per :class:`ManagerLease`).

    Args:
        db: The metadata database.
        url: This server's address, shown to a second server that is refused.
        on_lost: Called (from the heartbeat thread) if another server took the lease
            over, which happens only when this one stopped renewing it for
            :data:`LEASE_TTL_S`: this server must then stop managing.
    """

    def __init__(self, db: Database, url: str, on_lost: Callable[[], None] | None = None) -> None:
        self.db, self.url, self.on_lost = db, url, on_lost
        self.instance = secrets.token_hex(16)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def held(self) -> bool:
        """Whether this server holds the lease (and renews it)."""
        return self._thread is not None and self._thread.is_alive()

    def acquire(self) -> None:
        """Take the lease, or raise :class:`ServerBusyError` naming its live holder.

        Holding it already is fine (a renewal); a holder that is gone is replaced.
        """
        if self.held:
            return
        for _ in range(5):
            if self._try_acquire():
                self._stop.clear()
                self._thread = threading.Thread(
                    target=self._renew_loop, name="lepton-lease", daemon=True
                )
                self._thread.start()
                return
        raise ServerBusyError(  # only under a storm of servers starting together
            "could not take the server lease: other servers keep taking it; start one server"
        )

    def release(self) -> None:
        """Give the lease back (a clean stop), so that the next server needs no checks."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=HEARTBEAT_S * 2)
            self._thread = None
        with self.db.session() as s:
            s.execute(delete(ServerLeaseRow).where(ServerLeaseRow.instance == self.instance))

    def _mine(self) -> dict[str, object]:
        now = time.time()
        return {
            "instance": self.instance,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "process": fingerprint(os.getpid()),
            "url": self.url,
            "acquired_at": now,
            "heartbeat": now,
        }

    def _try_acquire(self) -> bool:
        try:
            with self.db.session() as s:
                row = s.get(ServerLeaseRow, 1)
                if row is None:
                    s.add(ServerLeaseRow(id=1, **self._mine()))
                    return True
                if row.instance != self.instance and _alive(row):
                    raise ServerBusyError(
                        f"another Lepton server (pid {row.pid} on {row.host}, {row.url}) "
                        f"already manages the jobs and deployments of this database; stop "
                        f"it first, or give this one its own LEPTON_HOME or LEPTON_DATABASE_URL"
                    )
                previous = (row.instance, row.pid, row.host)  # the update refreshes row
                taken = s.execute(
                    update(ServerLeaseRow)
                    .where(ServerLeaseRow.id == 1, ServerLeaseRow.instance == previous[0])
                    .values(**self._mine())
                )
                if taken.rowcount != 1:  # type: ignore[attr-defined]
                    return False  # another server took it in between: look again
                if previous[0] != self.instance:
                    log.warning(
                        "took the server lease over from pid %d on %s, which is gone",
                        *previous[1:],
                    )
                return True
        except IntegrityError:  # another server inserted the row first: look again
            return False

    def _renew_loop(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                with self.db.session() as s:
                    renewed = s.execute(
                        update(ServerLeaseRow)
                        .where(ServerLeaseRow.id == 1, ServerLeaseRow.instance == self.instance)
                        .values(heartbeat=time.time())
                    )
                    lost = renewed.rowcount != 1  # type: ignore[attr-defined]
            except Exception:  # the database is away for a moment: retry at the next beat
                log.exception("could not renew the server lease")
                continue
            if lost:
                log.error(
                    "another server took over this database's jobs and deployments; "
                    "this one stops managing them"
                )
                if self.on_lost is not None:
                    self.on_lost()
                return


def _alive(row: ServerLeaseRow) -> bool:
    if row.host == socket.gethostname():
        return matches_fingerprint(row.pid, row.process)
    return time.time() - row.heartbeat < LEASE_TTL_S
