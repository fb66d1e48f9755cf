"""The Gaussian mechanism's exact privacy curve (Balle & Wang, ICML 2018, Theorem 8).

Adding ``N(0, sigma^2)`` to a query of L2 sensitivity ``Δ`` is ``(epsilon, delta)``-DP
exactly when

    delta >= Phi(Δ / (2 sigma) - epsilon sigma / Δ)
             - e^epsilon Phi(-Δ / (2 sigma) - epsilon sigma / Δ)

(``Phi`` the standard normal CDF). The right side falls as ``sigma`` grows and as
``epsilon`` grows, so the smallest ``sigma`` for a given ``(epsilon, delta)`` (and the
smallest ``epsilon`` for a given ``sigma, delta``) is found by bisection. The classic
bound ``sigma = Δ sqrt(2 ln(1.25 / delta)) / epsilon`` (Dwork & Roth, Theorem A.1) holds
only for ``epsilon < 1`` and is always larger: the analytic sigma adds less noise for
the same guarantee. The second term is computed in log space (``log_ndtr``) so that
``e^epsilon`` times a tiny tail neither overflows nor underflows.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from scipy import special

from lepton.errors import PrivacyError

__all__ = [
    "analytic_gaussian_sigma",
    "check_epsilon_delta",
    "classic_gaussian_sigma",
    "gaussian_delta",
    "gaussian_epsilon",
]

_ITERATIONS = 200  # bisection halvings; stops earlier at float precision


def check_epsilon_delta(epsilon: float, delta: float, *, need_delta: bool = False) -> None:
    """Refuse an epsilon that is not positive and finite, or a delta outside [0, 1)."""
    if not (isinstance(epsilon, int | float) and math.isfinite(epsilon) and epsilon > 0):
        raise PrivacyError(f"epsilon must be a positive, finite number, got {epsilon!r}")
    if not (isinstance(delta, int | float) and 0 <= delta < 1):
        raise PrivacyError(f"delta must be in [0, 1), got {delta!r}; e.g. delta=1e-6")
    if need_delta and delta == 0:
        raise PrivacyError(
            "the Gaussian mechanism needs delta > 0 (e.g. delta=1e-6, well below 1/rows); "
            "use the Laplace mechanism for delta = 0"
        )


def gaussian_delta(sigma: float, epsilon: float, sensitivity: float = 1.0) -> float:
    """The exact delta of the Gaussian mechanism at ``epsilon`` (Balle & Wang, Thm. 8).

    Example:
        >>> gaussian_delta(sigma=analytic_gaussian_sigma(1.0, 1e-5), epsilon=1.0) <= 1e-5
        True
    """
    a = sensitivity / (2.0 * sigma)
    b = epsilon * sigma / sensitivity
    first = float(special.ndtr(a - b))
    second = math.exp(min(epsilon + float(special.log_ndtr(-a - b)), 700.0))
    return max(first - second, 0.0)


def _bisect(holds: Callable[[float], bool], start: float) -> float:
    """The smallest x > 0 (to float precision) where the monotone ``holds(x)`` is true:
    an upper end is found by doubling, then the bracket is halved; the upper end, where
    ``holds`` is true, is returned, so the answer always satisfies the condition."""
    lo, hi = 0.0, start
    while not holds(hi):
        lo, hi = hi, hi * 2.0
        if hi > 1e12:
            raise PrivacyError("no noise scale meets this (epsilon, delta); raise either")
    for _ in range(_ITERATIONS):
        mid = (lo + hi) / 2.0
        if mid in (lo, hi):
            break
        if holds(mid):
            hi = mid
        else:
            lo = mid
    return hi


def analytic_gaussian_sigma(epsilon: float, delta: float, sensitivity: float = 1.0) -> float:
    """The smallest noise standard deviation that makes the Gaussian mechanism
    ``(epsilon, delta)``-DP for a query of L2 ``sensitivity`` (the analytic Gaussian
    mechanism of Balle & Wang 2018; valid for every epsilon > 0, not only < 1).

    Example:
        >>> round(analytic_gaussian_sigma(1.0, 1e-5), 3)
        3.731
        >>> round(classic_gaussian_sigma(1.0, 1e-5), 3)  # the classic bound: more noise
        4.845
    """
    check_epsilon_delta(epsilon, delta, need_delta=True)
    if not (math.isfinite(sensitivity) and sensitivity > 0):
        raise PrivacyError(f"sensitivity must be positive and finite, got {sensitivity!r}")
    return _bisect(lambda sigma: gaussian_delta(sigma, epsilon, sensitivity) <= delta, sensitivity)


def gaussian_epsilon(sigma: float, delta: float, sensitivity: float = 1.0) -> float:
    """The smallest epsilon for which noise ``sigma`` is ``(epsilon, delta)``-DP (the
    inverse of :func:`analytic_gaussian_sigma`); ``inf`` for ``delta == 0``."""
    if delta <= 0:
        return math.inf
    if gaussian_delta(sigma, 0.0, sensitivity) <= delta:
        return 0.0
    return _bisect(lambda eps: gaussian_delta(sigma, eps, sensitivity) <= delta, 1.0)


def classic_gaussian_sigma(epsilon: float, delta: float, sensitivity: float = 1.0) -> float:
    """The classic calibration ``Δ sqrt(2 ln(1.25 / delta)) / epsilon`` (Dwork & Roth
    2014, Theorem A.1), valid for ``epsilon < 1``; for comparison only."""
    check_epsilon_delta(epsilon, delta, need_delta=True)
    if epsilon >= 1:
        raise PrivacyError(
            f"the classic Gaussian bound holds only for epsilon < 1, got {epsilon}; use "
            f"analytic_gaussian_sigma"
        )
    return sensitivity * math.sqrt(2.0 * math.log(1.25 / delta)) / epsilon
