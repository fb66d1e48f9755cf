"""The live series of each deployment: its ``/metrics`` scraped into a ring buffer.

The monitor calls :meth:`MetricsScraper.scrape` once per round for each ready
deployment; the API and dashboard read :meth:`MetricsScraper.summary`. The parsing and
the arithmetic are in :mod:`lepton.platform.deployments._metrics`.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import httpx

from lepton.platform.deployments._metrics import Series, parse_metrics
from lepton.platform.deployments._runtime import Runtime
from lepton.platform.deployments._specs import base_url

__all__ = ["MetricsScraper"]

log = logging.getLogger("lepton.platform.deployments")


class MetricsScraper:
    """Scrapes deployments' ``/metrics`` (with their token) into a :class:`Series` each.

    Locking: ``_lock`` guards the series (written by the monitor thread, read by API
    threads); a scrape's HTTP call is made outside it.

    Args:
        http: The client for the scrapes (loopback, short timeouts).
        host: The address deployments listen on.
        samples: Samples kept per deployment (one per scrape).
    """

    def __init__(self, http: httpx.Client, host: str, samples: int) -> None:
        self._http = http
        self.host = host
        self.samples = samples
        self._lock = threading.Lock()
        self._series: dict[str, Series] = {}

    def scrape(self, rt: Runtime) -> None:
        """Add one sample of ``rt``'s supervisor; a failed scrape is skipped (logged)."""
        try:
            answer = self._http.get(
                f"{base_url(self.host, rt.port)}/metrics",
                headers={"authorization": f"Bearer {rt.token}"},
            )
        except httpx.HTTPError:
            return
        pid = rt.pid
        if answer.status_code != 200 or pid is None:
            log.warning("deployment %s: /metrics answered %d", rt.name, answer.status_code)
            return
        try:
            counters = parse_metrics(answer.text)
        except (ValueError, KeyError) as exc:
            log.warning("deployment %s: unreadable /metrics (%s)", rt.name, exc)
            return
        with self._lock:
            series = self._series.setdefault(rt.name, Series(self.samples))
            series.add(pid, counters, time.time(), fresh=rt.fresh)

    def summary(self, name: str, window_s: float) -> dict[str, Any]:
        """The figures of ``name`` over the last ``window_s`` seconds (empty ones when it
        was never scraped); see :meth:`Series.summary`."""
        with self._lock:
            return self._series.get(name, Series(1)).summary(window_s)

    def forget(self, name: str) -> None:
        """Drop ``name``'s series (deleted, or its process to be adopted afresh)."""
        with self._lock:
            self._series.pop(name, None)
