"""``lepton privacy``: set and read a dataset's privacy budget, its charges, and run a DP
query that is charged to it."""

from __future__ import annotations

import datetime as dt
import json

import typer
from rich.console import Console
from rich.table import Table

from lepton import data as lp_data

__all__ = ["privacy_app"]

privacy_app = typer.Typer(
    help="Differential privacy: each dataset's (epsilon, delta) budget, the ledger of what "
    "was released, and DP queries charged to it before they answer.",
    no_args_is_help=True,
)
console = Console(highlight=False, soft_wrap=True)


@privacy_app.command("set-budget")
def set_budget(
    dataset: str = typer.Argument(..., help="Catalog dataset (its splits share one budget)."),
    epsilon: float = typer.Option(..., help="Total epsilon every release together may spend."),
    delta: float = typer.Option(0.0, help="Total delta (0 for pure-epsilon releases only)."),
) -> None:
    """Set or change a dataset's budget (charges already made stay on the ledger)."""
    from lepton.privacy import set_budget as set_

    record = set_(dataset, epsilon=epsilon, delta=delta)
    console.print(
        f"{record.dataset}: budget epsilon={record.epsilon:g}, delta={record.delta:g}; "
        f"spent {record.spent:.4g} in {record.charges} charge(s)"
    )


@privacy_app.command("budget")
def budget(
    dataset: str = typer.Argument(..., help="Catalog dataset."),
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON."),
) -> None:
    """What a dataset's budget is, what its releases spent (composed by the accountant),
    and what remains."""
    from lepton.privacy import budget as read

    record = read(dataset)
    if as_json:
        print(json.dumps(record.to_dict(), indent=2))
        return
    console.print(
        f"{record.dataset}: spent {record.spent:.4g} of epsilon {record.epsilon:g} "
        f"(delta {record.delta:g}, {record.accountant} accountant), remaining "
        f"{record.remaining:.4g}, {record.charges} charge(s)"
    )


@privacy_app.command("charges")
def charges(
    dataset: str = typer.Argument(..., help="Catalog dataset."),
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON."),
) -> None:
    """Every release charged to a dataset, oldest first, with the epsilon spent after it."""
    from lepton.privacy import charges as history

    records = history(dataset)
    if as_json:
        print(json.dumps([c.to_dict() for c in records], indent=2))
        return
    table = Table(title=f"charges to {dataset}", title_justify="left")
    for column in ("#", "when", "who", "what", "epsilon after"):
        table.add_column(column)
    for c in records:
        when = dt.datetime.fromtimestamp(c.at).strftime("%Y-%m-%d %H:%M:%S")
        table.add_row(str(c.id), when, c.who, c.what, f"{c.epsilon_after:.4g}")
    console.print(table)


@privacy_app.command("query")
def query(
    dataset: str = typer.Argument(..., help="Catalog dataset."),
    statistic: str = typer.Argument(..., help="count, sum, mean, variance, histogram, quantile."),
    epsilon: float = typer.Option(..., help="What this release spends."),
    column: str | None = typer.Option(None, help="The column (name or index)."),
    low: float | None = typer.Option(None, help="Declared lower bound (values are clipped)."),
    high: float | None = typer.Option(None, help="Declared upper bound."),
    bins: int | None = typer.Option(None, help="Histogram bins over [low, high]."),
    q: float | None = typer.Option(None, help="Quantile in [0, 1]."),
    split: str = typer.Option("all", help="train, test or all (they share one budget)."),
) -> None:
    """A differentially private statistic of one column, charged to the dataset's budget
    before it is computed; bounds are declared, never read from the data."""
    from lepton.privacy import query as ask

    data = lp_data.load(dataset, split=split)  # type: ignore[arg-type]
    key: str | int | None = int(column) if column is not None and column.isdigit() else column
    bounds = (low, high) if low is not None and high is not None else None
    release = ask(data, statistic, epsilon=epsilon, column=key, bounds=bounds, bins=bins, q=q)  # type: ignore[arg-type]
    console.print(repr(release))
