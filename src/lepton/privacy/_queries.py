"""DP statistics of one column of a ``Dataset``, each charged to the ledger first.

Neighbouring datasets differ by adding or removing one row (unbounded DP), so the row
count itself is private and every sensitivity below is the most one added or removed
row can change the statistic, with values clipped to the declared ``[L, U]``:

- ``count``: 1.
- ``sum``: ``max(|L|, |U|)`` (the value of the row added or removed).
- ``mean``: a noisy sum of ``x - m`` (``m = (L + U) / 2``, sensitivity ``(U - L) / 2``)
  over a noisy count (1), each with half the budget; ``m + sum / count``, clipped to
  ``[L, U]``.
- ``variance``: noisy count (1), sum of ``x - m`` (``(U - L) / 2``) and sum of
  ``(x - m)^2`` (``((U - L) / 2)^2``), a third of the budget each; clipped to
  ``[0, ((U - L) / 2)^2]``.
- ``histogram``: each row is in one bin, so adding or removing it changes one count by
  1: L1 and L2 sensitivity 1, for any number of bins (noise on every bin, empty ones
  too, so no bin's emptiness leaks). Values outside a numeric range fall into the edge
  bins; values outside the declared categories are not counted.
- ``quantile``: the exponential mechanism over ``[L, U]`` (Smith 2011): the interval
  between consecutive sorted values ``i`` has utility ``-|i - q n|``, whose sensitivity
  is at most 1, weighted by its length; a uniform point of the chosen interval. Several
  quantiles split epsilon evenly.

With ``mechanism="gaussian"`` the parts of one statistic get noise multipliers that
compose to one Gaussian of the asked ``(epsilon, delta)`` (Gaussians compose exactly).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from dp_accounting import dp_event

from lepton.data import Dataset
from lepton.errors import PrivacyError
from lepton.privacy._accounting import DpEvent, EpsilonDpEvent
from lepton.privacy._columns import ColumnSpec, column_index, column_values, declared
from lepton.privacy._gaussian import analytic_gaussian_sigma, check_epsilon_delta
from lepton.privacy._history import declared_columns
from lepton.privacy._ledger import charge
from lepton.privacy._mechanisms import Release, gumbel_argmax
from lepton.privacy._rng import generator
from lepton.privacy._tables import as_table
from lepton.storage import Database

__all__ = ["STATISTICS", "Mechanism", "Statistic", "noise_plan", "query"]

Statistic = Literal["count", "sum", "mean", "variance", "histogram", "quantile"]
Mechanism = Literal["laplace", "gaussian"]
STATISTICS: tuple[str, ...] = ("count", "sum", "mean", "variance", "histogram", "quantile")
_PARTS = {"count": 1, "sum": 1, "mean": 2, "variance": 3, "histogram": 1}


def noise_plan(parts: int, epsilon: float, delta: float, mechanism: str) -> tuple[float, DpEvent]:
    """The noise multiplier of each of ``parts`` noisy parts (noise scale = multiplier x
    the part's sensitivity) and the event they spend together: ``(epsilon, delta)``."""
    if mechanism == "laplace":
        multiplier = parts / epsilon
        event: DpEvent = dp_event.LaplaceDpEvent(noise_multiplier=multiplier)
    elif mechanism == "gaussian":
        multiplier = analytic_gaussian_sigma(epsilon, delta) * math.sqrt(parts)
        event = dp_event.GaussianDpEvent(noise_multiplier=multiplier)
    else:
        raise PrivacyError(f"mechanism must be 'laplace' or 'gaussian', got {mechanism!r}")
    if parts > 1:
        event = dp_event.SelfComposedDpEvent(event, parts)
    return multiplier, event


def _noise(rng: np.random.Generator, mechanism: str, scale: float, size: Any = None) -> Any:
    if mechanism == "laplace":
        return rng.laplace(0.0, scale, size=size)
    return rng.normal(0.0, scale, size=size)


def _spec(
    dataset: Dataset,
    column: str | int,
    bounds: tuple[float, float] | None,
    bins: int | None,
    categories: Sequence[float] | None,
    database: Database | str | None,
) -> ColumnSpec:
    name = str(column)
    if categories is not None:
        return declared({name: list(categories)}, {}, [name])[name]
    if bounds is not None:
        if not (isinstance(bounds, tuple | list) and len(bounds) == 2):
            raise PrivacyError(f"bounds must be (lower, upper), got {bounds!r}")
        return declared({name: (*bounds, bins or 10)}, {}, [name])[name]
    spec = declared(None, declared_columns(dataset, database), [name])[name]
    if bins is not None and spec.categories is None:
        return ColumnSpec(name, spec.lower, spec.upper, bins)
    return spec


def query(
    dataset: Dataset | Any,
    statistic: Statistic,
    *,
    epsilon: float,
    column: str | int | None = None,
    bounds: tuple[float, float] | None = None,
    bins: int | None = None,
    categories: Sequence[float] | None = None,
    q: float | Sequence[float] | None = None,
    delta: float = 0.0,
    mechanism: Mechanism = "laplace",
    seed: int | None = None,
    database: Database | str | None = None,
    who: str | None = None,
) -> Release:
    """A differentially private statistic of one column, charged to the dataset's
    budget before anything is computed (see the module docstring for each sensitivity).

    Args:
        dataset: A tabular :class:`~lepton.data.Dataset` (features of shape (N, d)), a
            pandas DataFrame or a dict of numeric columns.
        statistic: ``count``, ``sum``, ``mean``, ``variance``, ``histogram`` or ``quantile``.
        epsilon: What the release spends.
        column: A feature name, a feature index or ``"target"`` (``count``: optional).
        bounds: The declared ``(lower, upper)`` of the column; values are clipped to it.
            Without it, the bounds declared with the budget are used, else the call is
            refused: bounds are never taken from the data.
        bins: Equal-width bins of ``bounds`` for ``histogram`` (default 10).
        categories: The declared values of a categorical column, for ``histogram``.
        q: The quantile(s) in [0, 1] for ``quantile``.
        delta: The release's delta (``mechanism="gaussian"`` only).
        mechanism: ``"laplace"`` (pure epsilon-DP) or ``"gaussian"`` (needs delta > 0);
            quantiles always use the exponential mechanism.
        seed: Fixed noise for tests: the release is then marked ``private=False``.
        database: The ledger's database (default: ``open_database()``).
        who: Who asks, for the ledger (default: the OS user).

    Raises:
        PrivacyError: Undeclared bounds, an unknown column or statistic, a bad epsilon.
        NoBudgetError: The dataset has no budget.
        BudgetExceededError: The budget cannot pay; nothing is released.

    Example:
        >>> data = lp.data.load("diabetes", split="all")  # doctest: +SKIP
        >>> lp.privacy.set_budget(data, epsilon=1.0)  # doctest: +SKIP
        >>> lp.privacy.query(data, "mean", column="target", bounds=(0, 400),
        ...                  epsilon=0.5).value  # doctest: +SKIP
        151.8
    """
    dataset = as_table(dataset)
    if statistic not in STATISTICS:
        raise PrivacyError(f"statistic must be one of {', '.join(STATISTICS)}; got {statistic!r}")
    check_epsilon_delta(epsilon, delta, need_delta=mechanism == "gaussian")
    if mechanism == "laplace" and delta:
        raise PrivacyError("the Laplace mechanism spends no delta; pass mechanism='gaussian'")
    if column is None and statistic != "count":
        raise PrivacyError(f"a {statistic} needs column=, a feature name or 'target'")
    spec = None
    if column is not None:
        column_index(dataset, column)  # an unknown column fails before any charge
        if statistic != "count":
            spec = _spec(dataset, column, bounds, bins, categories, database)
            if spec.categories is not None and statistic != "histogram":
                raise PrivacyError(f"a {statistic} needs numeric bounds, not categories")
    what = f"{statistic}({column if column is not None else '*'})"
    if statistic == "quantile":
        qs = _quantiles(q)
        event: DpEvent = EpsilonDpEvent(epsilon / len(qs))
        if len(qs) > 1:
            event = dp_event.SelfComposedDpEvent(event, len(qs))
        paid = charge(dataset, event, what=f"{what} exponential", database=database, who=who)
        assert spec is not None
        assert column is not None
        rng, private = generator(seed)
        values = column_values(dataset, column)
        found = [_quantile(values, spec, qi, epsilon / len(qs), rng) for qi in qs]
        value: Any = found[0] if isinstance(q, float | int) else np.asarray(found)
        return Release(value, "exponential", epsilon, 0.0, event, private, None, paid, qs)
    multiplier, event = noise_plan(_PARTS[statistic], epsilon, delta, mechanism)
    paid = charge(dataset, event, what=f"{what} {mechanism}", database=database, who=who)
    # -- charged: only now is the data read --
    rng, private = generator(seed)
    values = (
        column_values(dataset, column) if column is not None else np.zeros(len(dataset.features))
    )
    value, domain = _answer(statistic, values, spec, multiplier, mechanism, rng)
    return Release(value, mechanism, epsilon, delta, event, private, multiplier, paid, domain)


def _quantiles(q: float | Sequence[float] | None) -> list[float]:
    qs = [q] if isinstance(q, float | int) else list(q) if q is not None else []
    if not qs or not all(isinstance(x, float | int) and 0 <= x <= 1 for x in qs):
        raise PrivacyError(f"quantile needs q= in [0, 1] (a number or a list), got {q!r}")
    return [float(x) for x in qs]


def _answer(
    statistic: str,
    values: np.ndarray,
    spec: ColumnSpec | None,
    multiplier: float,
    mechanism: str,
    rng: np.random.Generator,
) -> tuple[Any, list[float] | None]:
    if statistic == "count":
        return float(len(values) + _noise(rng, mechanism, multiplier)), None
    assert spec is not None
    if statistic == "histogram":
        if spec.categories is not None:
            counts = np.array([np.sum(values == c) for c in spec.categories], dtype=np.float64)
            domain = list(spec.categories)
        else:
            edges = spec.edges()
            clipped = np.clip(values, edges[0], edges[-1])
            counts = np.histogram(clipped, edges)[0].astype(np.float64)
            domain = edges.tolist()
        return counts + _noise(rng, mechanism, multiplier, counts.shape), domain
    lower, upper = spec.span
    x = np.clip(values, lower, upper)
    if statistic == "sum":
        return float(
            x.sum() + _noise(rng, mechanism, multiplier * max(abs(lower), abs(upper)))
        ), None
    middle, half = (lower + upper) / 2.0, (upper - lower) / 2.0
    total = float((x - middle).sum() + _noise(rng, mechanism, multiplier * half))
    count = max(float(len(x) + _noise(rng, mechanism, multiplier)), 1.0)
    if statistic == "mean":
        return float(np.clip(middle + total / count, lower, upper)), None
    squares = float(((x - middle) ** 2).sum() + _noise(rng, mechanism, multiplier * half * half))
    variance = squares / count - (total / count) ** 2
    return float(np.clip(variance, 0.0, half * half)), None


def _quantile(
    values: np.ndarray, spec: ColumnSpec, q: float, epsilon: float, rng: np.random.Generator
) -> float:
    lower, upper = spec.span
    x = np.sort(np.clip(values, lower, upper))
    edges = np.concatenate([[lower], x, [upper]])  # n + 1 intervals
    lengths = np.diff(edges)
    utility = -np.abs(np.arange(len(lengths)) - q * len(x))
    with np.errstate(divide="ignore"):  # an empty interval has weight 0: log -inf
        log_weights = np.log(lengths) + epsilon * utility / 2.0
    i = gumbel_argmax(log_weights, rng)
    return float(rng.uniform(edges[i], edges[i + 1]))
