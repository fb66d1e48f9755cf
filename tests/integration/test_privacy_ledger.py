"""The privacy ledger under concurrency: 50 processes charging one budget at once never
overspend it, on SQLite and on a real PostgreSQL server."""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor

import pytest
from dp_accounting import LaplaceDpEvent  # type: ignore[import-untyped]

from lepton import privacy
from lepton.errors import BudgetExceededError
from lepton.storage import Database

pytestmark = pytest.mark.integration

PROCESSES = 50
DRIVERS = ("sqlalchemy.dialects.sqlite.pysqlite", "sqlalchemy.dialects.postgresql.psycopg")


@pytest.mark.slow
def test_concurrent_charges_from_many_processes_never_overspend(database_url: str) -> None:
    db = Database(database_url)
    db.upgrade()
    privacy.set_budget("wine", epsilon=2.0, database=db)
    # forkserver: each charge runs in a fresh process forked from a clean server that
    # imported lepton.privacy, the database drivers and the main module (pytest) once:
    # spawning 50 interpreters would import torch and pytest 50 times
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["__main__", "lepton.privacy", *DRIVERS])
    with ProcessPoolExecutor(PROCESSES, mp_context=context, max_tasks_per_child=1) as pool:
        futures = [
            pool.submit(privacy.charge, "wine", LaplaceDpEvent(noise_multiplier=10.0),
                        what=f"count #{i}", database=database_url)
            for i in range(PROCESSES)
        ]  # fmt: skip
        outcomes = [f.exception() or f.result() for f in futures]
    charged = [o for o in outcomes if isinstance(o, privacy.Charge)]
    refused = [o for o in outcomes if isinstance(o, BudgetExceededError)]
    assert len(charged) == 20, outcomes
    assert len(refused) == 30, outcomes
    assert len({c.pid for c in charged}) == 20  # separate processes
    history = privacy.charges("wine", database=db)
    assert sorted(c.id for c in charged) == [c.id for c in history]
    after = [c.epsilon_after for c in history]
    assert after == pytest.approx([0.1 * (i + 1) for i in range(20)])  # one at a time
    assert max(after) <= 2.0 + 1e-9
    spent = privacy.budget("wine", database=db)
    assert spent.spent == pytest.approx(2.0)
    assert spent.remaining == pytest.approx(0.0)
    db.dispose()
