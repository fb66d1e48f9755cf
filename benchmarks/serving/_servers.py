"""The servers under test: how each is launched, probed, and stopped.

Each one binds 127.0.0.1 on a free port, runs one worker/replica, sets torch to one
thread, and writes no access log. Its stdout/stderr go to a log file under the ignored
``benchmarks/.runs/serving/`` folder.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import _procs
from _envs import VENVS

HERE = Path(__file__).resolve().parent
APPS = HERE / "apps"
REPO = HERE.parents[1]
RUNS = REPO / "benchmarks" / ".runs" / "serving"
LEPTON = REPO / ".venv" / "bin" / "lepton"

BATCH_SIZE = 32
MAX_WAIT_MS = 2.0


def _row(body: dict[str, Any]) -> list[float]:
    out: list[float] = body["outputs"]
    return out


def _first_row(body: list[list[float]]) -> list[float]:
    return body[0]


@dataclass(frozen=True)
class ServerSpec:
    """A server variant: where it runs and how its request and answer look."""

    server: str  # "lepton", "fastapi", "litserve", "bentoml", "ray"
    variant: str  # "unbatched" or "batched"
    args: tuple[str, ...]  # the command after the interpreter; {port} and {runs} are filled in
    env_name: str | None  # the anchor venv; None runs Lepton from the repo venv
    batch_of_one: bool = False  # the body carries [row] instead of row (BentoML batchable)
    read_outputs: Callable[[Any], list[float]] = field(default=_row)
    # A Prometheus histogram of executed batch sizes at GET /metrics, where there is one.
    batch_histogram: str | None = None

    @property
    def name(self) -> str:
        return f"{self.server}/{self.variant}"

    def command(self, port: int) -> list[str]:
        fill = {"port": str(port), "runs": str(RUNS), "apps": str(APPS)}
        args = [a.format(**fill) for a in self.args]
        if self.env_name is None:
            return [str(LEPTON), *args]
        return [str(VENVS / self.env_name / "bin" / "python"), *args]

    def body(self, row: list[float]) -> dict[str, Any]:
        return {"inputs": [row] if self.batch_of_one else row}


def _app(name: str) -> str:
    return str(APPS / name)


_BENTO = ("-m", "bentoml", "serve", "--host", "127.0.0.1", "--port", "{port}")
_BENTO_DIR = ("--working-dir", "{apps}")
_RAY = (_app("ray_mlp.py"), "--port", "{port}", "--temp-dir", "{runs}/ray")


def _lepton(target: str) -> tuple[str, ...]:
    return (
        "serve",
        _app(target),
        *("--host", "127.0.0.1", "--port", "{port}", "--replicas", "1", "--threads", "1"),
    )


SPECS: tuple[ServerSpec, ...] = (
    ServerSpec(
        "lepton", "batched", _lepton("lepton_mlp.py:MLP"), None, batch_histogram="lepton_batch_size"
    ),
    ServerSpec("lepton", "unbatched", _lepton("lepton_mlp.py:MLPUnbatched"), None),
    ServerSpec("fastapi", "unbatched", (_app("fastapi_mlp.py"), "--port", "{port}"), "fastapi"),
    ServerSpec("litserve", "unbatched", (_app("litserve_mlp.py"), "--port", "{port}"), "litserve"),
    ServerSpec(
        "litserve",
        "batched",
        (_app("litserve_mlp.py"), "--port", "{port}", "--batched"),
        "litserve",
    ),
    ServerSpec("bentoml", "unbatched", (*_BENTO, "bentoml_mlp:MLP", *_BENTO_DIR), "bentoml"),
    ServerSpec(
        "bentoml",
        "batched",
        (*_BENTO, "bentoml_mlp:MLPBatched", *_BENTO_DIR),
        "bentoml",
        batch_of_one=True,
        read_outputs=_first_row,
        batch_histogram="bentoml_service_adaptive_batch_size",
    ),
    ServerSpec("ray", "unbatched", _RAY, "ray"),
    ServerSpec("ray", "batched", (*_RAY, "--batched"), "ray"),
)

# What every server's environment gets: one torch/BLAS thread and no usage reporting
# (LitServe 0.2 sends none; Ray's loopback and auth settings are in apps/ray_mlp.py).
SERVER_ENV = {
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "PYTHONUNBUFFERED": "1",
    "BENTOML_DO_NOT_TRACK": "true",
    "RAY_USAGE_STATS_ENABLED": "0",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@dataclass
class RunningServer:
    """A started server: its leader process, port, and log."""

    spec: ServerSpec
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/predict"

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def start(spec: ServerSpec) -> RunningServer:
    """Launches the server as the leader of a new session; does not wait for it."""
    RUNS.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = RUNS / f"{spec.server}-{spec.variant}.log"
    env = {**os.environ, **SERVER_ENV, "BENTOML_HOME": str(RUNS / "bentoml")}
    env.pop("VIRTUAL_ENV", None)
    with log.open("wb") as out:
        proc = subprocess.Popen(
            spec.command(port),
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return RunningServer(spec, proc, port, log)


def post(url: str, body: Any, timeout_s: float = 10.0) -> tuple[int, Any]:
    """POSTs ``body`` as JSON; returns the status and the decoded answer (None if not JSON)."""
    data = json.dumps(body).encode()
    request = urllib.request.Request(url, data, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, None


def wait_ready(server: RunningServer, row: list[float], timeout_s: float) -> list[float]:
    """Probes with one real request until it succeeds; returns the model's 10 outputs."""
    deadline = time.monotonic() + timeout_s
    last = "no answer yet"
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(
                f"{server.spec.name} exited with {server.proc.returncode}:\n{server.log_tail()}"
            )
        try:
            status, answer = post(server.url, server.spec.body(row), timeout_s=5.0)
        except (OSError, ValueError) as e:  # refused, reset, or half-started
            last = repr(e)
        else:
            if status == 200:
                return server.spec.read_outputs(answer)
            last = f"HTTP {status}"
        time.sleep(0.5)
    raise RuntimeError(
        f"{server.spec.name} not ready after {timeout_s:.0f} s ({last}):\n{server.log_tail()}"
    )


def batch_totals(server: RunningServer) -> tuple[float, float] | None:
    """(sum, count) of the server's executed-batch-size histogram, or None without one."""
    name = server.spec.batch_histogram
    if name is None:
        return None
    url = f"http://127.0.0.1:{server.port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    totals = {"sum": 0.0, "count": 0.0}
    for line in text.splitlines():
        for suffix in totals:
            if line.startswith(f"{name}_{suffix}"):  # summed over labels (one route here)
                totals[suffix] += float(line.rsplit(" ", 1)[1])
    return totals["sum"], totals["count"]


def stop(server: RunningServer) -> None:
    _procs.stop_server(server.proc)


def lepton_available() -> bool:
    """Whether the repo venv has a ``lepton serve`` command yet."""
    if not LEPTON.exists():
        return False
    probe = subprocess.run([str(LEPTON), "serve", "--help"], capture_output=True, cwd=REPO)
    return probe.returncode == 0
