"""What the AIOps loop watches and exports: the series fed to the anomaly detectors
(:data:`SERIES`), the watched numbers of a scrape (:func:`figures`), and the Prometheus
text of the drift, anomaly, alert and live gauges (:func:`exposition`)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily

if TYPE_CHECKING:
    from lepton.platform.deployments._aiops import AIOps

__all__ = ["SERIES", "exposition", "figures", "watched"]

# series watched for anomalies, and the smallest change that counts (absolute units)
SERIES: dict[str, float] = {"latency_ms_p95": 5.0, "error_rate": 0.05, "rps": 1.0,
                            "memory_mb": 50.0, "cpu_percent": 25.0,
                            "queue_depth": 2.0}  # fmt: skip


def figures(summary: dict[str, Any]) -> dict[str, float | None]:
    """The watched numbers of a scraper summary (``error_rate``: errors per request)."""
    rps = float(summary.get("rps") or 0.0)
    errors = float(summary.get("errors_per_s") or 0.0)
    out: dict[str, float | None] = {
        key: summary.get(key)
        for key in ("latency_ms_p95", "latency_ms_p99", "latency_ms_mean", "queue_depth",
                    "memory_mb", "cpu_percent", "timeouts", "proxy_error_rate")
    }  # fmt: skip
    out["rps"] = rps
    out["error_rate"] = errors / rps if rps > 0 else 0.0
    return out


def watched(
    summary: dict[str, Any], metric: str, window_s: float, min_requests: int = 0
) -> float | None:
    """``metric`` of a scraper summary over ``window_s``; ``None`` (no data) when the
    window holds fewer than ``min_requests`` requests: a p95 of three requests judges
    nothing."""
    numbers = figures(summary)
    if min_requests and (numbers["rps"] or 0.0) * window_s < min_requests:
        return None
    return numbers.get(metric)


def exposition(aiops: AIOps) -> bytes:
    """Prometheus text of ``aiops``' drift, anomaly and alert gauges and live figures."""
    registry = CollectorRegistry()
    registry.register(_Collector(aiops))  # type: ignore[arg-type]
    return generate_latest(registry)


class _Collector:
    def __init__(self, aiops: AIOps) -> None:
        self.aiops = aiops

    def collect(self) -> Iterator[GaugeMetricFamily]:
        score = GaugeMetricFamily(
            "lepton_drift_score", "Drift statistic of a deployment's logged inputs, by feature.",
            labels=["deployment", "feature", "statistic"],
        )  # fmt: skip
        detected = GaugeMetricFamily(
            "lepton_drift_detected", "1 when the last drift report found drift.",
            labels=["deployment"],
        )  # fmt: skip
        for name, report in sorted(self.aiops.drift.reports().items()):
            if "drifted" not in report:
                continue
            detected.add_metric([name], float(report["drifted"]))
            for feature in report["features"]:
                for stat, value in feature["scores"].items():
                    score.add_metric([name, feature["name"], stat], float(value))
        anomalies = GaugeMetricFamily(
            "lepton_anomalies", "Anomalies raised on a deployment's metric series so far.",
            labels=["deployment", "series"],
        )  # fmt: skip
        with self.aiops._lock:
            counts = {n: dict(w.counts) for n, w in self.aiops._watches.items()}
        for name, by_series in sorted(counts.items()):
            for series in SERIES:
                anomalies.add_metric([name, series], float(by_series.get(series, 0)))
        firing = GaugeMetricFamily(
            "lepton_alerts_firing", "Alerts firing now, by rule and severity.",
            labels=["deployment", "rule", "severity"],
        )  # fmt: skip
        for alert in self.aiops.store.firing():
            firing.add_metric([alert["deployment"], alert["rule"], alert["severity"]], 1.0)
        yield from (score, detected, anomalies, firing)
        yield from _live(self.aiops)


def _live(aiops: AIOps) -> Iterator[GaugeMetricFamily]:
    """The deployments' live figures (scraped), for a dashboard of the whole platform."""
    families: dict[str, GaugeMetricFamily] = {}
    helps: dict[str, str] = {
        "rps": "Requests per second over the last 60 s.",
        "error_rate": "Errors per request over the last 60 s.",
        "latency_ms_p95": "95th percentile latency over the last 60 s, ms.",
        "latency_ms_p99": "99th percentile latency over the last 60 s, ms.",
        "queue_depth": "Requests waiting for a batch.",
        "memory_mb": "Memory of its processes (proportional set size), MiB.",
        "cpu_percent": "CPU use of its processes, percent of one core.",
    }
    for key, text in helps.items():
        families[key] = GaugeMetricFamily(f"lepton_deployment_{key}", text, labels=["deployment"])
    up = GaugeMetricFamily("lepton_deployment_ready", "1 when ready.", labels=["deployment"])
    for view in aiops.manager.list(0, 10_000)[0]:
        up.add_metric([view.name], float(view.state == "ready"))
        values = figures(aiops.manager.metrics(view.name, window_s=60.0))
        for key, family in families.items():
            value = values.get(key)
            if value is not None:
                family.add_metric([view.name], float(value))
    yield up
    yield from families.values()
