"""The privacy-budget ledger: each dataset's budget, and every release charged to it.

A dataset's budget ``(epsilon, delta)`` lives in the metadata database (SQLite or
PostgreSQL), keyed by :func:`budget_key`. Every DP release calls :func:`charge` before it
computes anything, and :func:`charge` does this in one transaction:

1. take the ledger's lock: ``BEGIN IMMEDIATE`` on SQLite (the database's write lock, so
   concurrent writers queue behind it with the connection's 30 s busy wait, and no two
   can read the same history and both write), ``SELECT ... FOR UPDATE`` of the budget
   row on PostgreSQL (concurrent charges of one dataset queue on that row; under READ
   COMMITTED each later statement sees every charge committed before the lock was won);
2. read the budget and every past charge's ``DpEvent``;
3. compose them with the new event (:func:`lepton.privacy._accounting.compose`: the PLD
   accountant of dp-accounting, RDP where PLD cannot, never worse than basic
   composition) at the budget's delta;
4. if that exceeds the budget, raise :class:`BudgetExceededError`: the transaction rolls
   back and the caller releases nothing; else insert the charge (and an audit-log entry)
   and commit.

Only after the commit does the caller compute and return the noisy answer, so a crash
between the two wastes budget but never releases an uncharged answer.
"""

from __future__ import annotations

import contextlib
import getpass
import math
import os
import socket
import time
from collections.abc import Iterator, Mapping
from typing import Any

from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from lepton.data import Dataset
from lepton.errors import BudgetExceededError
from lepton.privacy._accounting import DpEvent, compose, event_to_json
from lepton.privacy._columns import parse_columns
from lepton.privacy._gaussian import check_epsilon_delta
from lepton.privacy._history import (
    Budget,
    Charge,
    budget,
    budget_key,
    charge_of,
    database_of,
    events_of,
    no_budget,
)
from lepton.storage import Database
from lepton.storage.schema import AuditRow, PrivacyBudgetRow, PrivacyChargeRow

__all__ = ["charge", "set_budget"]

# Floating-point room when comparing a composed epsilon with the budget (20 charges of
# 0.1 against 2.0 must fit, whatever the rounding of the sum).
_RELATIVE_SLACK = 1e-9


def _who(who: str | None) -> str:
    if who:
        return who[:64]
    try:
        return getpass.getuser()[:64]
    except (OSError, KeyError):  # no passwd entry (some containers)
        return f"uid-{os.getuid()}"


@contextlib.contextmanager
def _locked(db: Database) -> Iterator[Session]:
    """A transaction that takes SQLite's write lock at its start (a plain transaction
    elsewhere: rows are locked with ``FOR UPDATE``); committed when the block ends."""
    with Session(db.engine, expire_on_commit=False) as session, session.begin():
        if db.engine.dialect.name == "sqlite":
            # pysqlite begins lazily, at the first write: two charges would both read the
            # history and the second's write would fail; IMMEDIATE takes the lock first.
            session.execute(text("BEGIN IMMEDIATE"))
        yield session


def _audit(session: Session, who: str, action: str, key: str, status: int, detail: Any) -> None:
    session.add(
        AuditRow(at=time.time(), actor=who, action=action, target=f"datasets/{key}"[:500],
                 status=status, detail=detail)
    )  # fmt: skip


def set_budget(
    dataset: Dataset | str,
    *,
    epsilon: float,
    delta: float = 0.0,
    columns: Mapping[str, Any] | None = None,
    database: Database | str | None = None,
    who: str | None = None,
) -> Budget:
    """Set (or change) the privacy budget of ``dataset``, and optionally declare its
    public columns (bounds, bins, categories) for the queries to use.

    Past charges stay: lowering the budget below what was spent refuses every further
    release. The change is written to the audit log.

    Args:
        dataset: A :class:`~lepton.data.Dataset` or a key (see :func:`budget_key`).
        epsilon: The total epsilon all releases together may spend.
        delta: The total delta (0 allows only pure-DP releases; else well below
            ``1 / rows``, e.g. ``1e-6``).
        columns: Declared columns, e.g. ``{"age": (0, 100, 10), "sex": [0, 1]}``; kept
            as they were when ``None``.
        database: The metadata database (default: :func:`lepton.storage.open_database`).
        who: Who sets it, for the audit log (default: the OS user).

    Example:
        >>> lp.privacy.set_budget("diabetes", epsilon=2.0, delta=1e-6)  # doctest: +SKIP
        Budget(dataset='diabetes', epsilon=2.0, delta=1e-06, spent=0.0, ...)
    """
    check_epsilon_delta(epsilon, delta)
    key, db, actor = budget_key(dataset), database_of(database), _who(who)
    declared = (
        {n: c.to_json() for n, c in parse_columns(columns).items()} if columns is not None else None
    )
    for attempt in range(2):
        try:
            with _locked(db) as s:
                row = s.get(PrivacyBudgetRow, key, with_for_update=True)
                now = time.time()
                if row is None:
                    row = PrivacyBudgetRow(dataset=key, columns={}, created_at=now)
                    s.add(row)
                row.epsilon, row.delta = float(epsilon), float(delta)
                row.updated_at, row.updated_by = now, actor
                if declared is not None:
                    row.columns = declared
                _audit(s, actor, "privacy.set_budget", key, 200,
                       {"epsilon": epsilon, "delta": delta, "columns": row.columns})  # fmt: skip
            break
        except IntegrityError:  # PostgreSQL: another process created the row first
            if attempt:
                raise
    return budget(key, database=db)


def charge(
    dataset: Dataset | str,
    event: DpEvent,
    *,
    what: str,
    database: Database | str | None = None,
    who: str | None = None,
) -> Charge:
    """Charge one release to the budget of ``dataset``, before releasing it.

    The one entry point of the ledger for every DP release: the queries, the table
    release, and a DP-SGD run (whose event is
    ``SelfComposedDpEvent(PoissonSampledDpEvent(q, GaussianDpEvent(sigma)), steps)``).
    Composes every past charge and this one with a real accountant at the budget's
    delta, under a lock (see the module docstring), and commits the charge only if the
    total fits. Release the result only after this returns.

    Args:
        dataset: A :class:`~lepton.data.Dataset` or a key (see :func:`budget_key`).
        event: The release's ``DpEvent`` (dp-accounting's, or :class:`EpsilonDpEvent`).
        what: What is released, for the history (``"mean(age)"``, ``"dpsgd mnist"``).
        database: The metadata database, or its URL (default: ``open_database()``).
        who: Who releases it, for the history (default: the OS user).

    Returns:
        The charge as written, with the composed epsilon after it.

    Raises:
        NoBudgetError: The dataset has no budget.
        BudgetExceededError: The release would exceed the budget; nothing was written.
        PrivacyError: ``event`` is not a ``DpEvent`` the accountants can compose.

    Example:
        >>> from dp_accounting import LaplaceDpEvent
        >>> lp.privacy.charge("diabetes", LaplaceDpEvent(10.0), what="count")  # doctest: +SKIP
        Charge(id=1, dataset='diabetes', ..., epsilon_after=0.1, ...)
    """
    stored = event_to_json(event)  # refuses what is not a DpEvent before any lock
    key, db, actor = budget_key(dataset), database_of(database), _who(who)
    what = str(what)[:500]
    try:
        with _locked(db) as s:
            row = s.get(PrivacyBudgetRow, key, with_for_update=True)
            if row is None:
                raise no_budget(key)
            past = events_of(s, key)
            after = compose([*past, event], row.delta)
            if after.epsilon > row.epsilon * (1 + _RELATIVE_SLACK):
                raise _exceeded(key, row, past, event, after.epsilon, what)
            written = PrivacyChargeRow(
                dataset=key, at=time.time(), who=actor, host=socket.gethostname()[:255],
                pid=os.getpid(), what=what, event=stored, epsilon_after=after.epsilon,
                delta=row.delta, accountant=after.accountant,
            )  # fmt: skip
            s.add(written)
            _audit(s, actor, "privacy.charge", key, 200,
                   {"what": what, "event": stored, "epsilon_after": after.epsilon})  # fmt: skip
            s.flush()
            result = charge_of(written)
    except BudgetExceededError as refused:
        with db.session() as s:
            _audit(s, actor, "privacy.charge", key, 403, {"what": what, "event": stored,
                                                          "refused": refused.message})  # fmt: skip
        raise
    return result


def _exceeded(
    key: str, row: PrivacyBudgetRow, past: list[Any], event: Any, after: float, what: str
) -> BudgetExceededError:
    spent = compose(past, row.delta).epsilon
    asked = compose([event], row.delta).epsilon
    hint = (
        " (a budget with delta=0 pays only for pure-DP releases: use the Laplace mechanism, "
        "or give the budget a delta)"
        if math.isinf(asked) and row.delta == 0
        else ""
    )
    return BudgetExceededError(
        f"the privacy budget of {key!r} cannot pay for {what}: {len(past)} releases spent "
        f"epsilon {spent:.4g} of {row.epsilon:g} (delta {row.delta:g}), this one asks "
        f"{asked:.4g}{hint} (composed total {after:.4g}), {max(row.epsilon - spent, 0.0):.4g} "
        f"remains. Nothing was released or charged. Ask for a smaller epsilon, or have the "
        f"data owner raise the budget: lp.privacy.set_budget({key!r}, epsilon=..., "
        f"delta={row.delta:g})"
    )
