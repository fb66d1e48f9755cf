"""``/api/v1/privacy``: each dataset's differential-privacy budget, what its releases have
spent (composed by the ledger's accountant), and its history of charges."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path
from pydantic import BaseModel

from lepton.errors import NoBudgetError, NotFoundError
from lepton.platform._deps import P
from lepton.platform._http import Page, PageQuery, allow

__all__ = ["router"]

router = APIRouter(prefix="/api/v1")
DatasetKey = Annotated[str, Path(min_length=1, max_length=300)]


class BudgetView(BaseModel):
    """:class:`lepton.privacy.Budget`, restated: ``lepton.privacy`` is an optional extra
    (``lepton[privacy]``), imported only when a route runs, so the server starts without it."""

    dataset: str
    epsilon: float
    delta: float
    spent: float
    remaining: float
    charges: int
    accountant: str
    columns: dict[str, Any]
    updated_at: float
    updated_by: str


class ChargeView(BaseModel):
    """:class:`lepton.privacy.Charge`: one release, and the composed epsilon after it."""

    id: int
    at: float
    who: str
    host: str
    pid: int
    what: str
    event: dict[str, Any]
    epsilon_after: float
    delta: float
    accountant: str


class LedgerView(BaseModel):
    budget: BudgetView
    charges: list[ChargeView]


@router.get("/privacy/budgets", tags=["privacy"])
@allow("viewer")
def budgets(p: P, paging: PageQuery) -> Page[BudgetView]:
    """Every dataset that has a privacy budget: epsilon and delta, spent and remaining."""
    from lepton import privacy

    views = [BudgetView(**b.to_dict()) for b in privacy.budgets(database=p.db)]
    return Page.of((views[paging.offset : paging.offset + paging.limit], len(views)), paging)


@router.get("/privacy/budgets/{dataset}", tags=["privacy"])
@allow("viewer")
def ledger(p: P, dataset: DatasetKey) -> LedgerView:
    """One dataset's budget and every charge to it, oldest first."""
    from lepton import privacy

    try:
        spent = privacy.budget(dataset, database=p.db)
    except NoBudgetError as missing:  # reading one: nothing to conflict with, it is not there
        raise NotFoundError(missing.message) from None
    history = privacy.charges(dataset, database=p.db)
    return LedgerView(
        budget=BudgetView(**spent.to_dict()),
        charges=[ChargeView(**{k: v for k, v in c.to_dict().items() if k != "dataset"})
                 for c in history],
    )  # fmt: skip
