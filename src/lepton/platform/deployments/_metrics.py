"""Live figures of a deployment, from scrapes of its ``/metrics`` (Prometheus text).

Each scrape is parsed into cumulative :class:`Counters` (the service's own routes left
out); a :class:`Series` keeps what happened between consecutive scrapes in a ring buffer
and sums a window of it: requests and errors per second, mean latency, and p50 / p99
estimated from the histogram buckets (:func:`quantile`).

Example:
    >>> series = Series(size=300)
    >>> series.add(pid, parse_metrics(text), time.time(), fresh=True)  # doctest: +SKIP
    >>> series.summary(window_s=60)["rps"]  # doctest: +SKIP
    12.5
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

__all__ = ["Counters", "Sample", "Series", "parse_metrics", "quantile"]

# The service's own routes (lepton.serve._app._BUILTIN): our probes and scrapes hit
# them every second, so they are not the deployment's traffic.
_BUILTIN_ROUTES = frozenset({"/", "/healthz", "/readyz", "/metrics", "/openapi.json"})


@dataclass
class Counters:
    """Cumulative figures of one ``/metrics`` answer, builtin routes left out."""

    requests: float = 0.0
    errors: float = 0.0
    latency_sum: float = 0.0
    latency_count: float = 0.0
    buckets: dict[float, float] = field(default_factory=dict)  # upper bound -> cumulative
    queue_depth: float = 0.0
    inflight: float = 0.0


@dataclass(frozen=True)
class Sample:
    """What happened between two scrapes."""

    t: float
    dt: float
    requests: float
    errors: float
    latency_sum: float
    latency_count: float
    buckets: dict[float, float]


def parse_metrics(text: str) -> Counters:
    """Sum one ``/metrics`` answer over its replicas and routes.

    Raises:
        ValueError, KeyError: The text is not Prometheus' format.
    """
    c = Counters()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.labels.get("route") in _BUILTIN_ROUTES:
                continue
            name, value = sample.name, float(sample.value)
            if name == "lepton_requests_total":
                c.requests += value
            elif name == "lepton_errors_total":
                c.errors += value
            elif name == "lepton_request_duration_seconds_sum":
                c.latency_sum += value
            elif name == "lepton_request_duration_seconds_count":
                c.latency_count += value
            elif name == "lepton_request_duration_seconds_bucket":
                le = float(sample.labels["le"])
                c.buckets[le] = c.buckets.get(le, 0.0) + value
            elif name == "lepton_queue_depth":
                c.queue_depth += value
            elif name == "lepton_inflight_requests":
                c.inflight += value
    c.inflight = max(0.0, c.inflight - 1)  # the scrape itself is in flight
    return c


def quantile(q: float, buckets: dict[float, float]) -> float | None:
    """Estimate a quantile from cumulative histogram buckets, as Prometheus does."""
    bounds = sorted(buckets)
    total = buckets[bounds[-1]] if bounds else 0.0
    if total <= 0:
        return None
    rank, lower, below = q * total, 0.0, 0.0
    for upper in bounds:
        count = buckets[upper]
        if count >= rank:
            if upper == float("inf"):
                return lower
            return lower + (upper - lower) * (rank - below) / max(count - below, 1e-12)
        lower, below = upper, count
    return lower


class Series:
    """A ring buffer of scrape-to-scrape samples of one deployment, and its totals."""

    def __init__(self, size: int) -> None:
        self.samples: deque[Sample] = deque(maxlen=size)
        self.last: Counters | None = None
        self.last_t: float | None = None
        self.pid: int | None = None
        self.requests_total = 0.0
        self.errors_total = 0.0
        self.queue_depth = 0.0
        self.inflight = 0.0

    def add(self, pid: int, now: Counters, t: float, *, fresh: bool) -> None:
        """Record the scrape ``now`` of supervisor ``pid`` at ``t``; ``fresh``: it was
        started by this manager (its counters began at zero), not adopted."""
        previous = self.last
        if pid != self.pid:
            self.pid = pid
            if fresh:  # started by us: its counters began at zero
                previous = Counters()
            else:  # adopted: what it counted before is history, not this window's
                previous = now
                self.requests_total += now.requests
                self.errors_total += now.errors
        assert previous is not None
        if now.requests < previous.requests:  # a counter reset
            previous = Counters()
        dt = t - self.last_t if self.last_t is not None else 1.0
        sample = Sample(
            t=t,
            dt=max(dt, 1e-3),
            requests=now.requests - previous.requests,
            errors=max(0.0, now.errors - previous.errors),
            latency_sum=max(0.0, now.latency_sum - previous.latency_sum),
            latency_count=max(0.0, now.latency_count - previous.latency_count),
            buckets={
                le: max(0.0, v - previous.buckets.get(le, 0.0)) for le, v in now.buckets.items()
            },
        )
        self.samples.append(sample)
        self.requests_total += sample.requests
        self.errors_total += sample.errors
        self.queue_depth, self.inflight = now.queue_depth, now.inflight
        self.last, self.last_t = now, t

    def summary(self, window_s: float) -> dict[str, Any]:
        """Totals, rates and latencies over the last ``window_s`` seconds, and the series
        (see :meth:`~lepton.platform.deployments._manager.DeploymentManager.metrics`)."""
        recent = [s for s in self.samples if s.t >= time.time() - window_s]
        span = sum(s.dt for s in recent)
        count = sum(s.latency_count for s in recent)
        buckets: dict[float, float] = {}
        for s in recent:
            for le, v in s.buckets.items():
                buckets[le] = buckets.get(le, 0.0) + v
        p50, p99 = quantile(0.5, buckets), quantile(0.99, buckets)
        p95 = quantile(0.95, buckets)
        return {
            "scraped_at": self.last_t,
            "requests_total": int(self.requests_total),
            "errors_total": int(self.errors_total),
            "rps": sum(s.requests for s in recent) / span if span else 0.0,
            "errors_per_s": sum(s.errors for s in recent) / span if span else 0.0,
            "latency_ms_mean": 1000 * sum(s.latency_sum for s in recent) / count if count else None,
            "latency_ms_p50": None if p50 is None else 1000 * p50,
            "latency_ms_p95": None if p95 is None else 1000 * p95,
            "latency_ms_p99": None if p99 is None else 1000 * p99,
            "queue_depth": self.queue_depth,
            "inflight": self.inflight,
            "series": [
                {
                    "t": s.t,
                    "rps": s.requests / s.dt,
                    "latency_ms": 1000 * s.latency_sum / s.latency_count
                    if s.latency_count
                    else None,
                    "errors": int(s.errors),
                }
                for s in self.samples
            ],
        }
