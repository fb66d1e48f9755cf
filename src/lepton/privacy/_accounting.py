"""Composing releases: how much of a budget a list of ``DpEvent`` s spends.

A release is described by a ``DpEvent`` of Google's ``dp-accounting`` (``LaplaceDpEvent``,
``GaussianDpEvent``, ``PoissonSampledDpEvent`` for a DP-SGD step, ...), plus
:class:`EpsilonDpEvent` here for a pure epsilon-DP mechanism that has no finer
description (the exponential mechanism). The ledger stores each event as JSON and, at
every charge, composes all of a dataset's events again. The composed epsilon at the
budget's delta is the smallest of these valid upper bounds:

- ``pld``: dp-accounting's privacy-loss-distribution accountant (tight for many events;
  pessimistic discretisation on a grid of :data:`PLD_INTERVAL`), when it supports every
  event; else ``rdp``: its Rényi accountant (DP-SGD with composed sub-events and the like).
- ``basic``: the pure-DP events summed (the worst case of pure composition, and the only
  bound at delta = 0) plus every Gaussian event composed exactly (Gaussians compose to one
  Gaussian, whose epsilon at delta is Balle & Wang's exact curve, with no discretisation).

The neighbouring relation is add/remove one row throughout (unbounded DP).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from lepton.errors import MissingExtraError, PrivacyError
from lepton.privacy._gaussian import gaussian_epsilon

try:
    import attr
    import numpy as np
    from dp_accounting import dp_event
    from dp_accounting.dp_event import DpEvent
    from dp_accounting.pld import common
    from dp_accounting.pld import privacy_loss_distribution as pld_lib
    from dp_accounting.pld.pld_privacy_accountant import (
        PLDAccountant,
    )
    from dp_accounting.rdp.rdp_privacy_accountant import (
        RdpAccountant,
    )
except ImportError:  # pragma: no cover - the privacy extra is in the dev install
    raise MissingExtraError(
        "lepton.privacy needs Google's dp-accounting; pip install 'lepton[privacy]'"
    ) from None

__all__ = [
    "PLD_INTERVAL",
    "Composition",
    "DpEvent",
    "EpsilonDpEvent",
    "compose",
    "event_from_json",
    "event_to_json",
]

# The PLD grid: its pessimism is at most one step per distinct event, and 1e-3 keeps a
# DP-SGD run of 15,000 steps under half a second (1e-4 takes seconds, inside the lock).
PLD_INTERVAL = 1e-3


@attr.s(frozen=True, slots=True, auto_attribs=True)
class EpsilonDpEvent(DpEvent):  # type: ignore[misc]
    """A pure ``epsilon``-DP mechanism known only by its epsilon (the exponential
    mechanism, a quantile). The PLD accountant composes it as the worst case of any
    epsilon-DP mechanism (dp-accounting's ``from_privacy_parameters``), the RDP one as
    ``min(epsilon, alpha epsilon^2 / 2)`` (Bun & Steinke 2016, Prop. 3.3)."""

    epsilon: float


class _PLD(PLDAccountant):  # type: ignore[misc]
    _pld: Any
    _value_discretization_interval: float

    def _maybe_compose(self, event: Any, count: int, do_compose: bool) -> Any:
        if isinstance(event, EpsilonDpEvent):
            if do_compose:
                params = common.DifferentialPrivacyParameters(event.epsilon, 0.0)
                pure = pld_lib.from_privacy_parameters(
                    params, value_discretization_interval=self._value_discretization_interval
                )
                self._pld = self._pld.compose(pure.self_compose(count))
            return None
        return super()._maybe_compose(event, count, do_compose)


class _RDP(RdpAccountant):  # type: ignore[misc]
    _rdp: np.ndarray
    _orders: np.ndarray

    def _maybe_compose(self, event: Any, count: int, do_compose: bool) -> Any:
        if isinstance(event, EpsilonDpEvent):
            if do_compose:
                eps = event.epsilon
                self._rdp += count * np.minimum(eps, 0.5 * eps * eps * self._orders)
            return None
        return super()._maybe_compose(event, count, do_compose)


# -- JSON ---------------------------------------------------------------------------------

_TYPES: dict[str, type[Any]] = {
    name: cls
    for name, cls in vars(dp_event).items()
    if isinstance(cls, type) and issubclass(cls, DpEvent) and cls is not DpEvent
}
_TYPES["EpsilonDpEvent"] = EpsilonDpEvent


def event_to_json(event: Any) -> dict[str, Any]:
    """A ``DpEvent`` as JSON: ``{"type": "GaussianDpEvent", "noise_multiplier": 2.0}``.

    Example:
        >>> from dp_accounting import LaplaceDpEvent
        >>> event_to_json(LaplaceDpEvent(noise_multiplier=10.0))
        {'type': 'LaplaceDpEvent', 'noise_multiplier': 10.0}
    """
    if not isinstance(event, DpEvent) or type(event).__name__ not in _TYPES:
        raise PrivacyError(
            f"a privacy charge needs a DpEvent of dp-accounting (e.g. "
            f"GaussianDpEvent(noise_multiplier=2.0)), got {event!r}"
        )
    out: dict[str, Any] = {"type": type(event).__name__}
    for field in attr.fields(type(event)):
        out[field.name] = _field_to_json(getattr(event, field.name))
    return out


def _field_to_json(value: Any) -> Any:
    if isinstance(value, DpEvent):
        return event_to_json(value)
    if isinstance(value, list | tuple):
        return [_field_to_json(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    raise PrivacyError(f"cannot store {value!r} of a DpEvent in the ledger")


def event_from_json(data: dict[str, Any]) -> Any:
    """The ``DpEvent`` that :func:`event_to_json` wrote (only dp-accounting's classes and
    :class:`EpsilonDpEvent` are built, never a class named by the data)."""
    cls = _TYPES.get(str(data.get("type")))
    if cls is None:
        raise PrivacyError(f"the ledger holds an unknown DpEvent type {data.get('type')!r}")
    return cls(**{k: _field_from_json(v) for k, v in data.items() if k != "type"})


def _field_from_json(value: Any) -> Any:
    if isinstance(value, dict):
        return event_from_json(value)
    if isinstance(value, list):
        return [_field_from_json(v) for v in value]
    return value


# -- composition --------------------------------------------------------------------------


@dataclass(frozen=True)
class Composition:
    """The composed epsilon of some events at one delta, and the bound that gave it
    (``pld``, ``rdp``, ``basic``, or ``none`` for no events)."""

    epsilon: float
    delta: float
    accountant: str


def _leaves(event: Any, count: int = 1) -> Iterable[tuple[Any, int]]:
    """The events that are not compositions, each with how many times it runs."""
    if isinstance(event, dp_event.SelfComposedDpEvent):
        yield from _leaves(event.event, count * event.count)
    elif isinstance(event, dp_event.ComposedDpEvent):
        for inner in event.events:
            yield from _leaves(inner, count)
    elif not isinstance(event, dp_event.NoOpDpEvent):
        yield event, count


def _grouped(events: Iterable[Any]) -> list[tuple[Any, int]]:
    """Identical leaves counted together: a self-composition is one FFT power in the PLD
    accountant, where composing each copy would cost a convolution apiece."""
    groups: dict[str, tuple[Any, int]] = {}
    for event in events:
        for leaf, count in _leaves(event):
            key = json.dumps(event_to_json(leaf), sort_keys=True)
            seen = groups.get(key)
            groups[key] = (leaf, count + (seen[1] if seen else 0))
    return list(groups.values())


def _basic(groups: Sequence[tuple[Any, int]], delta: float) -> float | None:
    """Pure epsilons summed plus all Gaussians as one; ``None`` when another kind of
    event is present."""
    pure: list[float] = []
    precision = 0.0  # of the one Gaussian: sum of count / noise_multiplier^2
    for leaf, count in groups:
        if isinstance(leaf, dp_event.LaplaceDpEvent):
            nm = leaf.noise_multiplier
            pure.append(math.inf if nm <= 0 else count / nm)
        elif isinstance(leaf, EpsilonDpEvent):
            pure.append(count * leaf.epsilon)
        elif isinstance(leaf, dp_event.NonPrivateDpEvent):
            pure.append(math.inf)
        elif isinstance(leaf, dp_event.GaussianDpEvent):
            nm = leaf.noise_multiplier
            precision += math.inf if nm <= 0 else count / (nm * nm)
        else:
            return None
    total = math.fsum(pure) if not any(map(math.isinf, pure)) else math.inf
    if precision == 0 or math.isinf(total):
        return total
    if math.isinf(precision):
        return math.inf
    return total + gaussian_epsilon(1.0 / math.sqrt(precision), delta)


def compose(events: Sequence[Any], delta: float) -> Composition:
    """The composed epsilon of ``events`` at ``delta``: the least of the bounds above.

    Raises:
        PrivacyError: No accountant can compose these events (the message says why).

    Example:
        >>> from dp_accounting import LaplaceDpEvent
        >>> compose([LaplaceDpEvent(noise_multiplier=10.0)] * 20, delta=0.0).epsilon
        2.0
    """
    groups = _grouped(events)
    if not groups:
        return Composition(0.0, delta, "none")
    bounds: list[tuple[float, str]] = []
    basic = _basic(groups, delta)
    if basic is not None:
        bounds.append((basic, "basic"))
    event = dp_event.ComposedDpEvent([dp_event.SelfComposedDpEvent(e, c) for e, c in groups])
    pld, rdp = _PLD(value_discretization_interval=PLD_INTERVAL), _RDP()
    chosen = ("pld", pld) if pld.supports(event) else ("rdp", rdp) if rdp.supports(event) else None
    if chosen is not None and delta > 0:  # at delta = 0 their bounds are infinite
        chosen[1].compose(event)
        bounds.append((float(chosen[1].get_epsilon(delta)), chosen[0]))
    if not bounds:
        kinds = ", ".join(sorted({type(leaf).__name__ for leaf, _ in groups}))
        if chosen is None:
            raise PrivacyError(
                f"the ledger cannot account for {kinds} under add/remove-one DP (the PLD and "
                f"RDP accountants of dp-accounting do not support it); randomized response is "
                f"local DP (replace-one) and is not charged to a dataset's budget"
            )
        raise PrivacyError(
            f"a budget with delta=0 pays only for pure-DP releases (Laplace, exponential); "
            f"these events ({kinds}) need delta > 0: raise the budget's delta, e.g. "
            f"lp.privacy.set_budget(data, epsilon=..., delta=1e-6)"
        )
    epsilon, accountant = min(bounds)
    return Composition(epsilon, delta, accountant)
