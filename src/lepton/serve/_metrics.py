"""Prometheus metrics of a service, summed over its replicas.

With several replica processes the values live in ``PROMETHEUS_MULTIPROC_DIR`` (set by
the supervisor before it starts them) and any replica's ``/metrics`` reports them all.
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

__all__ = ["CONTENT_TYPE_LATEST", "ServiceMetrics"]

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class ServiceMetrics:
    """Requests, latency, batch sizes, queue depth, in-flight requests and errors."""

    def __init__(self) -> None:
        self.multiprocess = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        registry = None if self.multiprocess else CollectorRegistry()
        self._registry = registry
        self.requests = Counter(
            "lepton_requests", "Requests answered, by route and status.",
            ["route", "status"], registry=registry,
        )  # fmt: skip
        self.latency = Histogram(
            "lepton_request_duration_seconds", "Time from request to response, by route.",
            ["route"], buckets=LATENCY_BUCKETS, registry=registry,
        )  # fmt: skip
        self.batch_size = Histogram(
            "lepton_batch_size", "Sizes of the batches a batched route executed.",
            ["route"], buckets=BATCH_BUCKETS, registry=registry,
        )  # fmt: skip
        self.queue_depth = Gauge(
            "lepton_queue_depth", "Requests waiting for a batch, by route.",
            ["route"], registry=registry, multiprocess_mode="livesum",
        )  # fmt: skip
        self.inflight = Gauge(
            "lepton_inflight_requests", "Requests being handled now.",
            registry=registry, multiprocess_mode="livesum",
        )  # fmt: skip
        self.errors = Counter(
            "lepton_errors", "Error answers, by route and error code.",
            ["route", "code"], registry=registry,
        )  # fmt: skip
        self._children: dict[tuple[str, ...], Any] = {}

    def observe(self, route: str, status: int, seconds: float) -> None:
        """Count one answered request."""
        key = ("r", route, str(status))
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self.requests.labels(route, str(status))
        child.inc()
        hist = self._children.get(("l", route))
        if hist is None:
            hist = self._children[("l", route)] = self.latency.labels(route)
        hist.observe(seconds)

    def error(self, route: str, code: str) -> None:
        """Count one error answer."""
        self.errors.labels(route, code).inc()

    def batch(self, route: str, size: int) -> None:
        """Record one executed batch."""
        self.batch_size.labels(route).observe(size)

    def queue(self, route: str, depth: int) -> None:
        """Set a route's queue depth."""
        self.queue_depth.labels(route).set(depth)

    def exposition(self) -> bytes:
        """The text format for ``GET /metrics``."""
        if self.multiprocess:
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry)
        assert self._registry is not None
        return generate_latest(self._registry)
