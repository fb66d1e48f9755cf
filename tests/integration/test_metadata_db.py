"""The metadata database contract, one suite over SQLite and a real PostgreSQL server."""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError as DBIntegrityError

from lepton.errors import DatabaseError, StaleSchemaError
from lepton.storage import Database
from lepton.storage.schema import MetricRow, ModelVersionRow, RegisteredModelRow, RunRow

pytestmark = pytest.mark.integration


def test_fresh_database_is_stale_until_upgraded(database_url: str) -> None:
    database = Database(database_url)
    assert database.current_revision() is None
    with pytest.raises(StaleSchemaError, match="lepton db upgrade"):
        database.check()
    database.upgrade()
    assert database.current_revision() == database.head_revision()
    database.check()
    database.upgrade()  # idempotent
    database.downgrade("base")
    with pytest.raises(StaleSchemaError, match="lepton db upgrade"):
        database.check()
    database.dispose()


def test_runs_and_metrics_round_trip(db: Database) -> None:
    with db.session() as s:
        run = RunRow(name="r1", state="running", params={"lr": 0.001, "layers": [32, 64]},
                  tags={}, system={}, created_at=time.time())  # fmt: skip
        s.add(run)
        s.flush()
        s.add_all(
            MetricRow(run_id=run.id, key="loss", step=i, value=1.0 / (i + 1), timestamp=time.time())
            for i in range(100)
        )
        run_id = run.id
    with db.session() as s:
        loaded = s.get(RunRow, run_id)
        assert loaded is not None
        assert loaded.params == {"lr": 0.001, "layers": [32, 64]}
        values = s.scalars(
            select(MetricRow.value)
            .where(MetricRow.run_id == run_id, MetricRow.key == "loss")
            .order_by(MetricRow.step)
        ).all()
        assert values[:3] == [1.0, 0.5, pytest.approx(1 / 3)]
        assert len(values) == 100


def test_failed_transaction_leaves_nothing(db: Database) -> None:
    with pytest.raises(RuntimeError, match="crash mid-transaction"), db.session() as s:  # noqa: PT012
        s.add(RunRow(name="half", state="running", params={}, tags={}, system={}, created_at=0.0))
        s.flush()
        raise RuntimeError("crash mid-transaction")
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(RunRow)) == 0


def test_constraints_are_enforced(db: Database) -> None:
    # SQLite and PostgreSQL word it differently; both name the constraint
    with pytest.raises(DBIntegrityError, match=r"(?i)foreign key"), db.session() as s:  # noqa: PT012
        s.add(MetricRow(run_id=12345, key="loss", step=0, value=1.0, timestamp=0.0))
        s.flush()  # no such run: the foreign key refuses it
    with db.session() as s:
        s.add(RegisteredModelRow(name="mnist-convnet", description="", created_at=0.0))
        s.flush()  # no relationship() is declared, so the unit of work does not order them
        s.add(ModelVersionRow(model_name="mnist-convnet", version=1, state="ready", manifest={},
                           created_at=0.0))  # fmt: skip
    with pytest.raises(DBIntegrityError, match=r"(?i)unique"), db.session() as s:  # noqa: PT012
        s.add(ModelVersionRow(model_name="mnist-convnet", version=1, state="pending", manifest={},
                           created_at=1.0))  # fmt: skip
        s.flush()  # versions are unique per model


def test_concurrent_writers_do_not_fail(db: Database) -> None:
    errors: list[BaseException] = []

    def writer(tag: str) -> None:
        try:
            for i in range(50):
                with db.session() as s:
                    s.add(RunRow(name=f"{tag}-{i}", state="running", params={}, tags={}, system={},
                              created_at=time.time()))  # fmt: skip
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(f"w{n}",)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(RunRow)) == 200


def test_unreachable_database_says_what_to_check() -> None:
    with pytest.raises(
        DatabaseError,
        match=r"(?s)cannot reach the database.*check that it runs and LEPTON_DATABASE_URL",
    ):
        Database("postgresql+psycopg://nobody@127.0.0.1:1/none").current_revision()
