"""The Privacy pages: each dataset's differential-privacy budget (``lp.privacy.set_budget``)
with what its releases have spent, and one dataset's ledger: the composed epsilon after
every charge, drawn against the budget, and the charges themselves (when, who, what).

The figures are the ledger's own (:func:`lepton.privacy.budgets`, :func:`~lepton.privacy.
charges`), composed by its accountant, so this page says exactly what a release would be
charged against."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from fastapi.responses import Response

from lepton.errors import NoBudgetError, NotFoundError, TrackingError
from lepton.platform._deps import P
from lepton.platform._http import allow
from lepton.platform.web._render import render
from lepton.tracking._plot import svg_string

__all__ = ["meter", "router"]

router = APIRouter(include_in_schema=False)
METER_W, METER_H = 160, 12
DatasetKey = Annotated[str, Path(min_length=1, max_length=300)]


@router.get("/privacy")
@allow("viewer")
def budgets(p: P, request: Request) -> Response:
    """Every dataset with a privacy budget: epsilon, delta, spent, remaining."""
    from lepton import privacy

    found = privacy.budgets(database=p.db)
    return render(
        request, "privacy.html", section="/datasets", budgets=found, budget=None,
        meters={b.dataset: meter(b.spent, b.epsilon) for b in found},
    )  # fmt: skip


@router.get("/privacy/{dataset}")
@allow("viewer")
def ledger(p: P, request: Request, dataset: DatasetKey) -> Response:
    """One dataset's budget, the epsilon spent after each charge, and the charges."""
    from lepton import privacy

    try:
        spent = privacy.budget(dataset, database=p.db)
    except NoBudgetError as missing:  # reading one: nothing to conflict with, it is not there
        raise NotFoundError(missing.message) from None
    history = privacy.charges(dataset, database=p.db)
    return render(
        request, "privacy.html", section="/datasets", budget=spent, charges=history,
        meter=meter(spent.spent, spent.epsilon), chart=_spent_chart(history, spent.epsilon),
    )  # fmt: skip


def meter(spent: float, epsilon: float) -> str:
    """A small SVG bar: the share of ``epsilon`` spent (red once it is all spent)."""
    share = min(spent / epsilon, 1.0) if epsilon > 0 else 1.0
    color = "#dc2626" if share >= 1.0 else "#d97706" if share >= 0.8 else "#2563eb"
    label = f"{share:.0%} of the budget spent"
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="meter" width="{METER_W}" '
        f'height="{METER_H}" viewBox="0 0 {METER_W} {METER_H}" role="img" aria-label="{label}">'
        f"<title>{label}</title>"
        f'<rect width="{METER_W}" height="{METER_H}" rx="3" fill="#e5e7eb"/>'
        f'<rect width="{share * METER_W:.1f}" height="{METER_H}" rx="3" fill="{color}"/></svg>'
    )


def _spent_chart(history: list[Any], epsilon: float) -> str | None:
    """Composed epsilon after each charge (charge 0 is the untouched budget) beside the
    budget's epsilon; ``None`` before the first charge."""
    if not history:
        return None
    steps = range(len(history) + 1)
    spent = [(0, 0.0)] + [(i + 1, c.epsilon_after) for i, c in enumerate(history)]
    try:
        return svg_string(
            [("epsilon spent", spent), ("budget", [(s, epsilon) for s in steps])],
            title="epsilon spent after each charge", y_label="epsilon",
        )  # fmt: skip
    except TrackingError:  # nothing finite to draw
        return None
