"""Load generation with ``wrk``: a Lua script for the POST body, and parsing its report."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


@dataclass(frozen=True)
class WrkResult:
    """One wrk run: completed responses, errors, and latency percentiles."""

    requests: int  # responses received, any status
    duration_s: float
    non_2xx: int
    socket_errors: int  # connect + read + write + timeout
    p50_ms: float
    p99_ms: float

    @property
    def ok(self) -> int:
        return max(self.requests - self.non_2xx, 0)

    @property
    def errors(self) -> int:
        return self.non_2xx + self.socket_errors

    @property
    def ok_per_s(self) -> float:
        return self.ok / self.duration_s if self.duration_s else 0.0


def ensure_wrk() -> str:
    """Path to ``wrk``; installs the Debian package when running as root and it is missing."""
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() != 0:
        raise SystemExit(
            "wrk is not installed. Install it (Debian/Ubuntu: `sudo apt-get install wrk`, "
            "macOS: `brew install wrk`) and run again."
        )
    print("installing wrk with apt-get", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], check=True, env=env)
    found = shutil.which("wrk")
    if not found:
        raise SystemExit("apt-get installed wrk but it is not on PATH")
    return found


def write_lua(path: Path, body: Any) -> Path:
    """A wrk script that POSTs ``body`` as JSON on every request."""
    text = json.dumps(body, separators=(",", ":"))
    if "]==]" in text:  # cannot happen with JSON numbers; guards the long-bracket quoting
        raise ValueError("body cannot be quoted as a Lua long string")
    lua = (
        'wrk.method = "POST"\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
        f"wrk.body = [==[{text}]==]\n"  # level-2 brackets: the JSON itself may hold "]]"
    )
    path.write_text(lua)
    return path


def run_wrk(
    wrk: str, url: str, script: Path, connections: int, duration_s: float, threads: int = 1
) -> WrkResult:
    """Runs wrk with ``--latency`` and parses its report."""
    cmd = [
        wrk,
        f"--threads={min(threads, connections)}",
        f"--connections={connections}",
        f"--duration={max(round(duration_s), 1)}s",
        "--timeout=10s",
        "--latency",
        f"--script={script}",
        url,
    ]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return parse_wrk(out)


def _to_ms(value: str, unit: str) -> float:
    return float(value) * UNITS_MS[unit]


def parse_wrk(report: str) -> WrkResult:
    """Reads requests, duration, errors and the 50%/99% latencies from wrk's text report."""
    total = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", report)
    if total is None:
        raise ValueError(f"unrecognised wrk output:\n{report}")
    latencies = {
        pct: _to_ms(value, unit)
        for pct, value, unit in re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s|m)\s*$", report, re.M)
    }
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", report)
    sockets = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", report
    )
    return WrkResult(
        requests=int(total[1]),
        duration_s=_to_ms(total[2], total[3]) / 1e3,
        non_2xx=int(non_2xx[1]) if non_2xx else 0,
        socket_errors=sum(int(n) for n in sockets.groups()) if sockets else 0,
        p50_ms=latencies.get("50", float("nan")),
        p99_ms=latencies.get("99", float("nan")),
    )
