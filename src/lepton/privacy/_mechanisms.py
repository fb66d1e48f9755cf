"""The mechanisms: Laplace, Gaussian (analytic calibration), exponential, randomized
response. Each returns a :class:`Release`: the noisy value and what it spent (epsilon,
delta and the ``DpEvent`` the ledger composes). They charge nothing themselves: the
queries (:func:`lepton.privacy.query`) charge the ledger first, then call them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from dp_accounting import dp_event

from lepton.errors import PrivacyError
from lepton.privacy._accounting import DpEvent, EpsilonDpEvent, event_to_json
from lepton.privacy._gaussian import analytic_gaussian_sigma, check_epsilon_delta
from lepton.privacy._history import Charge
from lepton.privacy._rng import SEEDED_NOTE, generator

__all__ = [
    "Release",
    "exponential",
    "gaussian",
    "gumbel_argmax",
    "laplace",
    "randomized_response",
]

Value = float | np.ndarray


@dataclass(frozen=True)
class Release:
    """A differentially private answer and what it cost.

    Attributes:
        value: The noisy answer (a float, or an array for a histogram or quantiles).
        mechanism: ``laplace``, ``gaussian``, ``exponential`` or ``randomized_response``.
        epsilon: The epsilon this release spends on its own.
        delta: Its delta.
        event: Its ``DpEvent`` (what the ledger composes).
        private: ``False`` when the noise came from a fixed ``seed``: such a release is
            for tests and must never be published.
        noise_multiplier: The noise scale per unit of sensitivity (Laplace ``b`` or
            Gaussian ``sigma`` divided by the sensitivity), where noise is added.
        charge: The ledger's charge that paid for it (queries), else ``None``.
        domain: What the entries of an array ``value`` stand for: a histogram's bin
            edges (one more than its counts) or categories, or the quantiles' ``q``.
    """

    value: Any
    mechanism: str
    epsilon: float
    delta: float
    event: DpEvent
    private: bool
    noise_multiplier: float | None = None
    charge: Charge | None = None
    domain: list[float] | None = None

    @property
    def note(self) -> str:
        """Why the release is not private, or ``""`` when it is."""
        return "" if self.private else SEEDED_NOTE

    def __repr__(self) -> str:
        tail = "" if self.private else f" -- {SEEDED_NOTE}"
        return (
            f"Release(value={self.value!r}, mechanism={self.mechanism!r}, "
            f"epsilon={self.epsilon:g}, delta={self.delta:g}, private={self.private}){tail}"
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form."""
        value = self.value.tolist() if isinstance(self.value, np.ndarray) else self.value
        return {
            "value": value,
            "mechanism": self.mechanism,
            "epsilon": self.epsilon,
            "delta": self.delta,
            "event": event_to_json(self.event),
            "private": self.private,
            "note": self.note,
            "noise_multiplier": self.noise_multiplier,
            "charge": self.charge.to_dict() if self.charge is not None else None,
            "domain": self.domain,
        }


def _check_sensitivity(sensitivity: float) -> float:
    if isinstance(sensitivity, bool) or not isinstance(sensitivity, int | float):
        raise PrivacyError(f"sensitivity must be a number, got {sensitivity!r}")
    if not (math.isfinite(sensitivity) and sensitivity > 0):
        raise PrivacyError(f"sensitivity must be positive and finite, got {sensitivity!r}")
    return float(sensitivity)


def _as_values(value: Value | Sequence[float]) -> Value:
    array = np.asarray(value, dtype=np.float64)
    return float(array) if array.ndim == 0 else array


def laplace(
    value: Value | Sequence[float], *, sensitivity: float, epsilon: float, seed: int | None = None
) -> Release:
    """The Laplace mechanism: ``value + Laplace(0, sensitivity / epsilon)`` per entry.

    ``epsilon``-DP when ``sensitivity`` bounds the L1 change of ``value`` (all entries
    together) between neighbouring datasets.

    Example:
        >>> laplace(42.0, sensitivity=1.0, epsilon=0.5, seed=0).noise_multiplier
        2.0
    """
    check_epsilon_delta(epsilon, 0.0)
    scale = _check_sensitivity(sensitivity) / epsilon
    rng, private = generator(seed)
    values = _as_values(value)
    noisy = values + rng.laplace(0.0, scale, size=np.shape(values))
    event = dp_event.LaplaceDpEvent(noise_multiplier=1.0 / epsilon)
    return Release(_as_values(noisy), "laplace", epsilon, 0.0, event, private, 1.0 / epsilon)


def gaussian(
    value: Value | Sequence[float],
    *,
    sensitivity: float,
    epsilon: float,
    delta: float,
    seed: int | None = None,
) -> Release:
    """The Gaussian mechanism with the analytic calibration of Balle & Wang (2018): the
    smallest sigma for which ``value + N(0, sigma^2)`` is ``(epsilon, delta)``-DP when
    ``sensitivity`` bounds the L2 change of ``value``.

    Example:
        >>> release = gaussian(0.0, sensitivity=2.0, epsilon=1.0, delta=1e-5, seed=0)
        >>> round(release.noise_multiplier, 3)  # sigma / sensitivity
        3.731
    """
    sigma = analytic_gaussian_sigma(epsilon, delta, _check_sensitivity(sensitivity))
    rng, private = generator(seed)
    values = _as_values(value)
    noisy = values + rng.normal(0.0, sigma, size=np.shape(values))
    multiplier = sigma / sensitivity
    event = dp_event.GaussianDpEvent(noise_multiplier=multiplier)
    return Release(_as_values(noisy), "gaussian", epsilon, delta, event, private, multiplier)


def gumbel_argmax(log_weights: np.ndarray, rng: np.random.Generator) -> int:
    """One index drawn with probability proportional to ``exp(log_weights)`` (the
    Gumbel-max trick: exact, and free of overflow for large ``epsilon * utility``)."""
    noisy = log_weights + rng.gumbel(size=log_weights.shape)
    return int(np.argmax(noisy))


def exponential(
    utilities: Sequence[float] | np.ndarray,
    *,
    sensitivity: float,
    epsilon: float,
    candidates: Sequence[Any] | None = None,
    seed: int | None = None,
) -> Release:
    """The exponential mechanism (McSherry & Talwar 2007): picks candidate ``r`` with
    probability proportional to ``exp(epsilon * u(r) / (2 * sensitivity))``, where
    ``sensitivity`` bounds how much one row changes any utility. ``epsilon``-DP.

    Args:
        utilities: One utility per candidate (higher is better).
        sensitivity: The utility's sensitivity.
        epsilon: The privacy parameter.
        candidates: What to return for each index (default: the index).
        seed: Fixed noise for tests (the release is then not private).

    Example:
        >>> exponential([0.0, 10.0], sensitivity=1.0, epsilon=2.0, candidates=["a", "b"],
        ...             seed=0).value
        'b'
    """
    check_epsilon_delta(epsilon, 0.0)
    scores = np.asarray(utilities, dtype=np.float64).ravel()
    if scores.size == 0 or not np.all(np.isfinite(scores)):
        raise PrivacyError("the exponential mechanism needs one finite utility per candidate")
    if candidates is not None and len(candidates) != scores.size:
        raise PrivacyError(f"{len(candidates)} candidates but {scores.size} utilities")
    log_weights = epsilon * scores / (2.0 * _check_sensitivity(sensitivity))
    rng, private = generator(seed)
    index = gumbel_argmax(log_weights, rng)
    value = candidates[index] if candidates is not None else index
    return Release(value, "exponential", epsilon, 0.0, EpsilonDpEvent(epsilon), private)


def randomized_response(
    values: int | Sequence[int] | np.ndarray, *, k: int, epsilon: float, seed: int | None = None
) -> Release:
    """k-ary randomized response (Warner 1965; Kairouz et al. 2016): each value in
    ``0..k-1`` is kept with probability ``e^eps / (e^eps + k - 1)``, else replaced by one
    of the other ``k - 1`` values uniformly.

    It is *local* DP: each value is ``epsilon``-DP on its own (two inputs, one output),
    which is how a person randomises their own answer before it is collected. Its event
    is dp-accounting's ``RandomizedResponseDpEvent`` (a replace-one guarantee); the
    ledger, which accounts add/remove-one releases of a dataset, does not take it.

    Example:
        >>> randomized_response([0, 1, 2], k=3, epsilon=50.0, seed=0).value.tolist()
        [0, 1, 2]
    """
    check_epsilon_delta(epsilon, 0.0)
    if isinstance(k, bool) or not isinstance(k, int) or k < 2:
        raise PrivacyError(f"randomized response needs k >= 2 possible values, got {k!r}")
    array = np.asarray(values)
    if array.dtype.kind not in "iu" or (array.size and (array.min() < 0 or array.max() >= k)):
        raise PrivacyError(f"randomized response takes whole numbers in 0..{k - 1}")
    rng, private = generator(seed)
    keep = math.exp(epsilon) / (math.exp(epsilon) + k - 1) if epsilon < 700 else 1.0
    flip = rng.random(size=array.shape) >= keep
    # another value, uniform over the k - 1 others: shift by 1..k-1 modulo k
    shifted = (array + rng.integers(1, k, size=array.shape)) % k
    out = np.where(flip, shifted, array)
    event = dp_event.RandomizedResponseDpEvent(noise_parameter=k * (1 - keep) / (k - 1),
                                               num_buckets=k)  # fmt: skip
    value: Any = int(out) if out.ndim == 0 else out
    return Release(value, "randomized_response", epsilon, 0.0, event, private)
