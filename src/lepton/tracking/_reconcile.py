"""Crash reconciliation: a run whose process died without ending it stops looking
``running``. Its own module, so that starting a run and reading runs (which both
reconcile first) share it without importing each other."""

from __future__ import annotations

import os
import socket
import time

from sqlalchemy import select

from lepton._procs import pid_alive
from lepton.storage import Database
from lepton.storage.schema import RunRow

__all__ = ["reconcile"]


def reconcile(db: Database) -> int:
    """Mark ``running`` runs of this host whose process is gone as ``failed``.

    A process killed by SIGKILL or a power cut cannot close its run; this is how such a
    run stops looking "running" forever. A pid that now belongs to another user still
    counts as alive (:func:`lepton._procs.pid_alive`): on a shared database that user's
    process may be the run's owner. Returns how many runs were marked.
    """
    host = socket.gethostname()
    marked = 0
    with db.session() as s:
        rows = s.scalars(select(RunRow).where(RunRow.state == "running", RunRow.host == host))
        for row in rows:
            if row.pid is not None and row.pid != os.getpid() and not pid_alive(row.pid):
                row.state, row.ended_at = "failed", time.time()
                row.tags = {
                    **row.tags,
                    "lepton.error": f"process {row.pid} died without ending the run",
                }
                marked += 1
    return marked
