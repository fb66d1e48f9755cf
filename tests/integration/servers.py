"""Start ``lepton serve`` / ``lepton deploy`` in a subprocess on 127.0.0.1 for a test."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from helpers import wait_until

LEPTON = str(Path(sys.executable).parent / "lepton")
APP = str(Path(__file__).parent / "serving_app.py")


def ok(answer: httpx.Response, status: int = 200) -> Any:
    """The JSON of an answer that must have ``status`` (the body shows when it has not)."""
    assert answer.status_code == status, answer.text
    return answer.json()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    url: str
    log_path: Path

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def worker_pids(self) -> list[int]:
        out = subprocess.run(["pgrep", "-P", str(self.process.pid)], capture_output=True, text=True)
        return sorted(int(p) for p in out.stdout.split())


def wait_ready(
    url: str,
    process: subprocess.Popen[bytes],
    log: Path,
    timeout: float = 90,
    path: str = "/readyz",
) -> None:
    """Wait until ``url + path`` answers 200; fail with the log if the process exits."""

    def ready() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"server exited with {process.returncode}:\n{log.read_text()}")
        try:
            return httpx.get(f"{url}{path}", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(
        ready, timeout, interval=0.1, message=lambda: f"server not ready:\n{log.read_text()}"
    )


@contextmanager
def running(*args: str, tmp: Path, env: dict[str, str] | None = None) -> Iterator[Server]:
    """Run ``lepton ARGS --port P`` until the block ends; yields once /readyz is 200."""
    port = free_port()
    log = tmp / f"server-{port}.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [LEPTON, *args, "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, process, log)
        yield Server(process, url, log)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


@dataclass
class Platform:
    """A running ``lepton server`` and the admin token it wrote."""

    process: subprocess.Popen[bytes]
    url: str
    log_path: Path
    admin_token: str

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def client(self, token: str | None = None) -> httpx.Client:
        return httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {token or self.admin_token}"},
            timeout=60,
        )


def start_platform(home: Path, tmp: Path, port: int | None = None) -> Platform:
    """Start ``lepton server`` on ``home``; returns once /api/v1/health answers."""
    port = port or free_port()
    log = tmp / f"platform-{port}-{time.monotonic_ns()}.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [LEPTON, "server", "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "LEPTON_HOME": str(home)},
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    wait_ready(url, process, log, path="/api/v1/health")
    token = (home / "admin-token").read_text().strip()
    return Platform(process, url, log, token)


def stop_platform(platform: Platform, home: Path) -> None:
    """Stop the server, then every job and deployment process it left running (they
    outlive a server on purpose, to be adopted by the next one)."""
    if platform.process.poll() is None:
        platform.process.send_signal(signal.SIGTERM)
        try:
            platform.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(platform.process.pid, signal.SIGKILL)
            platform.process.wait()
    kill_leftovers(home)


def kill_leftovers(home: Path) -> None:
    """SIGKILL the process groups of the jobs and deployments recorded in ``home``."""
    import sqlite3

    db = home / "lepton.db"
    if not db.exists():
        return
    import json

    with sqlite3.connect(db) as conn:
        pids = [r[0] for r in conn.execute("SELECT pid FROM deployments WHERE pid IS NOT NULL")]
        for (handle,) in conn.execute("SELECT handle FROM jobs"):
            pid = (json.loads(handle) if isinstance(handle, str) else handle or {}).get("pid")
            if pid:
                pids.append(pid)
    for pid in pids:
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
