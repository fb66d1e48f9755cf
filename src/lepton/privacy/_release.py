"""``differential_privacy(data, epsilon)``: a DP release of a whole table.

The release is the joint histogram of the declared columns (every combination of their
bins and categories is one cell) with Laplace (or Gaussian) noise on every cell, and a
synthetic table sampled from it. Adding or removing one row changes one cell by one, so
the noisy histogram is ``epsilon``-DP whatever the number of cells, and everything made
from it afterwards (the clipped, normalised counts, the synthetic rows, the noisy row
count) is post-processing and costs nothing more.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from lepton.data import Dataset
from lepton.errors import PrivacyError
from lepton.privacy._accounting import DpEvent
from lepton.privacy._columns import ColumnSpec, column_index, declared
from lepton.privacy._gaussian import check_epsilon_delta
from lepton.privacy._history import Charge, declared_columns
from lepton.privacy._ledger import charge
from lepton.privacy._queries import Mechanism, noise_plan
from lepton.privacy._rng import SEEDED_NOTE, generator
from lepton.privacy._tables import as_table
from lepton.storage import Database

__all__ = ["MAX_CELLS", "TableRelease", "differential_privacy"]

MAX_CELLS = 1_000_000  # joint histogram cells; more is mostly noise and memory


@dataclass(frozen=True)
class TableRelease:
    """A DP release of a table: the noisy joint histogram and a synthetic sample of it.

    Attributes:
        data: Synthetic rows of the declared columns (``feature_names`` are the column
            names), sampled from the noisy histogram: use it like the original table.
        counts: The noisy joint histogram, one axis per column (bins or categories).
        columns: The declared columns, as released (public: bounds, bins, categories).
        rows: The noisy row count (the sum of the noisy cells, at least 0).
        epsilon: What the release spent.
        delta: Its delta (0 with the Laplace mechanism).
        mechanism: ``laplace`` or ``gaussian``.
        event: Its ``DpEvent``.
        private: ``False`` when the noise came from a fixed seed (tests only).
        charge: The ledger's charge that paid for it.
    """

    data: Dataset
    counts: np.ndarray
    columns: dict[str, dict[str, Any]]
    rows: int
    epsilon: float
    delta: float
    mechanism: str
    event: DpEvent
    private: bool
    charge: Charge

    @property
    def note(self) -> str:
        """Why the release is not private, or ``""`` when it is."""
        return "" if self.private else SEEDED_NOTE


def _cell_of(values: np.ndarray, spec: ColumnSpec) -> np.ndarray:
    """Each row's bin or category index; -1 for a value of no declared category."""
    if spec.categories is not None:
        index = np.full(len(values), -1, dtype=np.int64)
        for i, category in enumerate(spec.categories):
            index[values == category] = i
        return index
    lower, upper = spec.span
    scaled = (np.clip(values, lower, upper) - lower) / (upper - lower)
    return np.asarray(np.minimum((scaled * spec.bins).astype(np.int64), spec.bins - 1))


def _sample(spec: ColumnSpec, cells: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Values for sampled cells: the category, or a uniform point of the bin."""
    if spec.categories is not None:
        return np.asarray(np.asarray(spec.categories, dtype=np.float64)[cells])
    edges = spec.edges()
    return np.asarray(rng.uniform(edges[cells], edges[cells + 1]))


def differential_privacy(
    data: Dataset | Any,
    epsilon: float = 0.1,
    *,
    columns: Mapping[str, Any] | Sequence[str] | None = None,
    delta: float = 0.0,
    mechanism: Mechanism = "laplace",
    rows: int | None = None,
    seed: int | None = None,
    database: Database | str | None = None,
    who: str | None = None,
) -> TableRelease:
    """Release a table with differential privacy: a noisy joint histogram of the declared
    columns and synthetic rows sampled from it, charged to the dataset's budget first.

    What is protected: whether any one row is in the table (add/remove-one DP), up to
    ``epsilon`` (and ``delta``) for this release, and up to the budget across all
    releases the ledger charged. What is not: the declared schema (names, bounds, bins,
    categories: public by declaration), rows outside the declared bounds (clipped into
    the edge bins, so their extremes are lost, not hidden), people with several rows
    (group privacy: ``k`` rows of one person get ``k * epsilon``), releases made outside
    Lepton's ledger, and timing or floating-point side channels of the noise. The row
    count is noised (it is the sum of the noisy cells).

    Args:
        data: A tabular :class:`~lepton.data.Dataset`, a pandas DataFrame or a dict of
            numeric columns (its budget is then keyed by its content: set it on the same
            table).
        epsilon: What the release spends (the whole table at once).
        columns: The columns to release and their declared bounds, e.g.
            ``{"age": (0, 100, 10), "sex": [0, 1]}`` (a range with bins, or
            categories); a list of names takes their bounds from the budget's
            declared columns; ``None`` releases every declared column.
        delta: Its delta, with ``mechanism="gaussian"``.
        mechanism: ``"laplace"`` (pure epsilon-DP) or ``"gaussian"``.
        rows: How many synthetic rows to sample (default: the noisy row count).
        seed: Fixed noise for tests (the release is marked ``private=False``).
        database: The ledger's database (default: ``open_database()``).
        who: Who releases it, for the ledger (default: the OS user).

    Raises:
        PrivacyError: Undeclared columns, too many cells, a bad epsilon.
        NoBudgetError: The dataset has no budget.
        BudgetExceededError: The budget cannot pay; nothing is released.

    Example:
        >>> table = lp.data.load("breast-cancer", split="all")  # doctest: +SKIP
        >>> lp.privacy.set_budget(table, epsilon=1.0)  # doctest: +SKIP
        >>> noisy = lp.privacy.differential_privacy(
        ...     table, epsilon=0.1, columns={"mean radius": (5, 30, 10)})  # doctest: +SKIP
        >>> noisy.data.feature_names  # doctest: +SKIP
        ['mean radius']
    """
    data = as_table(data)
    check_epsilon_delta(epsilon, delta, need_delta=mechanism == "gaussian")
    if mechanism == "laplace" and delta:
        raise PrivacyError("the Laplace mechanism spends no delta; pass mechanism='gaussian'")
    if isinstance(columns, str):
        columns = [columns]
    stored = declared_columns(data, database)
    if columns is None:
        if not stored:
            raise PrivacyError(
                'declare the columns to release, e.g. columns={"age": (0, 100, 10), "sex": '
                "[0, 1]}, or with the budget: lp.privacy.set_budget(data, epsilon=..., "
                "columns=...); bounds are never taken from the data"
            )
        names = list(stored)
        specs = declared(None, stored, names)
    elif isinstance(columns, Mapping):
        names = [str(n) for n in columns]
        specs = declared(columns, {}, names)
    else:
        names = [str(n) for n in columns]
        specs = declared(None, stored, names)
    if not names:
        raise PrivacyError("columns= names no column to release")
    for name in names:
        column_index(data, name)
    shape = tuple(specs[n].cells for n in names)
    if math.prod(shape) > MAX_CELLS:
        raise PrivacyError(
            f"the joint histogram of {names} has {math.prod(shape):,} cells (over "
            f"{MAX_CELLS:,}); release fewer columns, or fewer bins or categories per column"
        )
    if rows is not None and (isinstance(rows, bool) or not isinstance(rows, int) or rows < 1):
        raise PrivacyError(f"rows must be a positive whole number, got {rows!r}")
    multiplier, event = noise_plan(1, epsilon, delta, mechanism)
    paid = charge(data, event, what=f"table({', '.join(names)}) {mechanism}",
                  database=database, who=who)  # fmt: skip
    # -- charged: only now is the data read --
    rng, private = generator(seed)
    counts = _histogram(data, names, specs, shape)
    if mechanism == "laplace":
        noisy = counts + rng.laplace(0.0, multiplier, size=shape)
    else:
        noisy = counts + rng.normal(0.0, multiplier, size=shape)
    weights = np.clip(noisy, 0.0, None).ravel()
    total = round(float(weights.sum()))
    size = rows if rows is not None else max(total, 1)
    p = weights / weights.sum() if weights.sum() > 0 else np.full(weights.size, 1 / weights.size)
    picked = np.unravel_index(rng.choice(weights.size, size=size, p=p), shape)
    synthetic = np.stack([_sample(specs[n], picked[i], rng) for i, n in enumerate(names)], 1)
    table = Dataset(synthetic.astype(np.float32), name=f"{data.name}-dp", feature_names=names)
    return TableRelease(
        data=table, counts=noisy, columns={n: specs[n].to_json() for n in names}, rows=total,
        epsilon=epsilon, delta=delta, mechanism=mechanism, event=event, private=private,
        charge=paid,
    )  # fmt: skip


def _histogram(
    data: Dataset, names: list[str], specs: dict[str, ColumnSpec], shape: tuple[int, ...]
) -> np.ndarray:
    """The true joint counts; a row with a missing value or an undeclared category in
    any released column is left out (a filter on each row alone)."""
    n = data.features.shape[0]
    index = np.zeros(n, dtype=np.int64)
    keep = np.ones(n, dtype=bool)
    for name in names:
        idx = column_index(data, name)
        tensor = data.targets if idx is None else data.features[:, idx]
        assert tensor is not None
        values = tensor.detach().cpu().double().numpy()
        cell = _cell_of(np.nan_to_num(values, nan=0.0), specs[name])
        keep &= ~np.isnan(values) & (cell >= 0)
        index = index * specs[name].cells + np.maximum(cell, 0)
    flat = np.bincount(index[keep], minlength=math.prod(shape)).astype(np.float64)
    return flat.reshape(shape)
