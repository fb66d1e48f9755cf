"""Differential privacy: mechanisms, DP queries and table releases, and the privacy-budget
ledger that every release is charged to before it is made.

Every dataset has a budget ``(epsilon, delta)`` in the metadata database; a query, a
table release or a DP-SGD run calls :func:`charge` first, which composes all the
dataset's releases with a real accountant (dp-accounting's PLD, else RDP) and refuses
the one that would overspend. Neighbouring datasets differ by one row added or removed.
``docs/privacy.md`` says what is protected and what is not.

Example:
    >>> import lepton as lp
    >>> data = lp.data.load("breast-cancer", split="all")  # doctest: +SKIP
    >>> lp.privacy.set_budget(data, epsilon=1.0, delta=1e-6)  # doctest: +SKIP
    >>> lp.privacy.query(data, "mean", column="mean radius", bounds=(5, 30),
    ...                  epsilon=0.2).value  # doctest: +SKIP
    14.1
    >>> lp.privacy.budget(data).remaining  # doctest: +SKIP
    0.8
"""

import importlib.util

from lepton.errors import MissingExtraError as _MissingExtraError

if importlib.util.find_spec("dp_accounting") is None:  # the accountant everything uses
    raise _MissingExtraError(
        "lepton.privacy needs dp-accounting (and opacus for DP-SGD): pip install 'lepton[privacy]'"
    )

from lepton.privacy._accounting import Composition, EpsilonDpEvent, compose
from lepton.privacy._dpsgd import DPSGD
from lepton.privacy._gaussian import analytic_gaussian_sigma, classic_gaussian_sigma
from lepton.privacy._history import Budget, Charge, budget, budget_key, budgets, charges
from lepton.privacy._ledger import charge, set_budget
from lepton.privacy._mechanisms import (
    Release,
    exponential,
    gaussian,
    laplace,
    randomized_response,
)
from lepton.privacy._queries import STATISTICS, query
from lepton.privacy._release import TableRelease, differential_privacy

__all__ = [
    "DPSGD",
    "STATISTICS",
    "Budget",
    "Charge",
    "Composition",
    "EpsilonDpEvent",
    "Release",
    "TableRelease",
    "analytic_gaussian_sigma",
    "budget",
    "budget_key",
    "budgets",
    "charge",
    "charges",
    "classic_gaussian_sigma",
    "compose",
    "differential_privacy",
    "exponential",
    "gaussian",
    "laplace",
    "query",
    "randomized_response",
    "set_budget",
]
