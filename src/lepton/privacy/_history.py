"""Reading the ledger: its records (:class:`Budget`, :class:`Charge`), the key a dataset
is known by, a dataset's budget and spending, and its history of charges.

The writes (``set_budget``, ``charge``) are in :mod:`lepton.privacy._ledger`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from lepton.data import Dataset
from lepton.data import info as catalog_info
from lepton.errors import DatasetNotFoundError, NoBudgetError, PrivacyError
from lepton.privacy._accounting import compose, event_from_json
from lepton.privacy._tables import as_table
from lepton.storage import Database, open_database
from lepton.storage.schema import PrivacyBudgetRow, PrivacyChargeRow

__all__ = [
    "Budget",
    "Charge",
    "budget",
    "budget_key",
    "budgets",
    "charge_of",
    "charges",
    "database_of",
    "declared_columns",
    "events_of",
    "no_budget",
]


@dataclass(frozen=True)
class Charge:
    """One release charged to a dataset's budget (the ledger's history, oldest first)."""

    id: int
    dataset: str
    at: float
    who: str
    host: str
    pid: int
    what: str
    event: dict[str, Any]
    epsilon_after: float  # composed epsilon of every charge up to this one
    delta: float  # the budget's delta, at which epsilon_after was composed
    accountant: str  # which bound gave epsilon_after: pld, rdp or basic

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form."""
        return asdict(self)


@dataclass(frozen=True)
class Budget:
    """A dataset's budget and what its charges have spent, composed at ``delta``."""

    dataset: str
    epsilon: float
    delta: float
    spent: float
    remaining: float
    charges: int
    accountant: str
    columns: dict[str, Any] = field(default_factory=dict)
    updated_at: float = 0.0
    updated_by: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form."""
        return asdict(self)


def budget_key(dataset: Dataset | str) -> str:
    """The ledger's key for ``dataset``: its catalog name when it is (a split of) a
    catalog dataset, else its content fingerprint; a string is used as the key itself.

    Every split of ``lp.data.load("diabetes")`` shares the ``diabetes`` budget (they are
    the same people). A dataset of your own is known by its fingerprint, so pass the
    same data (or the same string key) to :func:`set_budget` and to the queries.

    Example:
        >>> budget_key("Diabetes")
        'diabetes'
    """
    if not isinstance(dataset, str):
        dataset = as_table(dataset)  # a DataFrame or dict of columns is known by its content
    name = dataset if isinstance(dataset, str) else dataset.name
    try:
        return catalog_info(name).name
    except DatasetNotFoundError:
        pass
    if isinstance(dataset, str):
        key = dataset.strip()
        if not key or len(key) > 300:
            raise PrivacyError(f"a budget key must have 1 to 300 characters, got {dataset!r}")
        return key
    return dataset.fingerprint()


def database_of(database: Database | str | None) -> Database:
    """The database itself, the one at a URL, or the default one (``open_database()``)."""
    if isinstance(database, Database):
        return database
    return open_database(database)


def no_budget(key: str) -> NoBudgetError:
    """The refusal of a release of a dataset that has no budget."""
    return NoBudgetError(
        f"dataset {key!r} has no privacy budget, so no DP release of it is allowed; its "
        f"owner sets one first, e.g. lp.privacy.set_budget(data, epsilon=1.0, delta=1e-6)"
    )


def events_of(session: Session, key: str) -> list[Any]:
    """Every charged ``DpEvent`` of the dataset ``key``, oldest first."""
    stored = session.scalars(
        select(PrivacyChargeRow.event)
        .where(PrivacyChargeRow.dataset == key)
        .order_by(PrivacyChargeRow.id)
    )
    return [event_from_json(e) for e in stored]


def budget(dataset: Dataset | str, *, database: Database | str | None = None) -> Budget:
    """The budget of ``dataset`` and what its charges spent, composed at its delta.

    Raises:
        NoBudgetError: No budget was set.

    Example:
        >>> lp.privacy.budget("diabetes").remaining  # doctest: +SKIP
        1.5
    """
    key, db = budget_key(dataset), database_of(database)
    with db.session() as s:
        row = s.get(PrivacyBudgetRow, key)
        if row is None:
            raise no_budget(key)
        return _budget_of(row, events_of(s, key))


def budgets(*, database: Database | str | None = None) -> list[Budget]:
    """Every dataset's budget and what its charges spent, by dataset key.

    Example:
        >>> [(b.dataset, b.remaining) for b in lp.privacy.budgets()]  # doctest: +SKIP
        [('diabetes', 1.5)]
    """
    with database_of(database).session() as s:
        rows = s.scalars(select(PrivacyBudgetRow).order_by(PrivacyBudgetRow.dataset)).all()
        return [_budget_of(row, events_of(s, row.dataset)) for row in rows]


def _budget_of(row: PrivacyBudgetRow, events: list[Any]) -> Budget:
    spent = compose(events, row.delta)
    return Budget(
        dataset=row.dataset,
        epsilon=row.epsilon,
        delta=row.delta,
        spent=spent.epsilon,
        remaining=max(row.epsilon - spent.epsilon, 0.0),
        charges=len(events),
        accountant=spent.accountant,
        columns=dict(row.columns or {}),
        updated_at=row.updated_at,
        updated_by=row.updated_by,
    )


def declared_columns(dataset: Dataset | str, database: Database | str | None) -> dict[str, Any]:
    """The columns declared with the budget of ``dataset`` (``{}`` when none is set)."""
    key, db = budget_key(dataset), database_of(database)
    with db.session() as s:
        stored = s.scalar(select(PrivacyBudgetRow.columns).where(PrivacyBudgetRow.dataset == key))
    return dict(stored or {})


def charges(dataset: Dataset | str, *, database: Database | str | None = None) -> list[Charge]:
    """Every charge to the budget of ``dataset``, oldest first (the history: when, who,
    what, the ``DpEvent`` as JSON and the composed epsilon after it)."""
    key, db = budget_key(dataset), database_of(database)
    with db.session() as s:
        rows = s.scalars(
            select(PrivacyChargeRow)
            .where(PrivacyChargeRow.dataset == key)
            .order_by(PrivacyChargeRow.id)
        ).all()
        return [charge_of(r) for r in rows]


def charge_of(row: PrivacyChargeRow) -> Charge:
    """The record of a charge row."""
    return Charge(
        id=row.id, dataset=row.dataset, at=row.at, who=row.who, host=row.host, pid=row.pid,
        what=row.what, event=dict(row.event), epsilon_after=row.epsilon_after, delta=row.delta,
        accountant=row.accountant,
    )  # fmt: skip
