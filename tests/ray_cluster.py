"""A real two-node Ray cluster for tests, started on 127.0.0.1 in a temporary folder.

``ray start --head`` and a second ``ray start --address`` (a worker node) each run in a
session of their own, so stopping the cluster signals exactly the process groups these
tests started (``ray stop`` would stop every Ray cluster on the machine, other tests'
included). Whatever is left that names the cluster's temporary folder is killed too.
Small object stores (100 MB a node) keep it a good neighbour on a shared box.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

RAY = str(Path(sys.executable).parent / "ray")
OBJECT_STORE_BYTES = 100_000_000


@dataclass(frozen=True)
class RayCluster:
    """A running cluster: its head's ``HOST:PORT`` and its temporary folder."""

    address: str
    root: Path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _processes_under(root: Path) -> list[int]:
    """Processes whose command line names ``root`` (this cluster's, no other)."""
    mark, found = str(root).encode(), []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with suppress(OSError):
                if mark in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
    return found


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _stop(groups: list[int], root: Path) -> None:
    for group in groups:
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(group, signal.SIGTERM)
    deadline = time.monotonic() + 3  # the folder goes anyway: no need for a clean exit
    while any(_group_alive(g) for g in groups) and time.monotonic() < deadline:
        time.sleep(0.2)
    for group in groups:
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(group, signal.SIGKILL)
    for pid in _processes_under(root):
        with suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def _ray_start(args: list[str], log: Path, env: dict[str, str]) -> int:
    """Run one ``ray start`` in a new session; returns its process group once it has
    started its daemons (they stay in the group after it exits)."""
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [RAY, "start", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
    try:
        code = process.wait(timeout=120)
    except subprocess.TimeoutExpired:
        code = None
    if code != 0:
        raise RuntimeError(f"`ray start {' '.join(args)}` failed ({code}):\n{log.read_text()}")
    return process.pid


@contextmanager
def ray_cluster(head_cpus: int = 2, worker_cpus: int = 1) -> Iterator[RayCluster]:
    """Yield a running head (``head_cpus``) plus one worker node (``worker_cpus``) on
    127.0.0.1; stop both and remove the folder afterwards."""
    root = Path(tempfile.mkdtemp(prefix="lepton-ray-", dir="/tmp"))  # short: socket paths
    port = _free_port()
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    common = [
        "--node-ip-address", "127.0.0.1", "--temp-dir", str(root),
        "--object-store-memory", str(OBJECT_STORE_BYTES), "--disable-usage-stats",
    ]  # fmt: skip
    groups: list[int] = []
    try:
        head = ["--head", "--port", str(port), "--num-cpus", str(head_cpus),
                "--num-gpus", "0", "--include-dashboard", "false", *common]  # fmt: skip
        groups.append(_ray_start(head, root / "head.out", env))
        address = f"127.0.0.1:{port}"
        node = ["--address", address, "--num-cpus", str(worker_cpus), "--num-gpus", "0", *common]
        groups.append(_ray_start(node, root / "node.out", env))
        yield RayCluster(address, root)
    finally:
        _stop(groups, root)
        shutil.rmtree(root, ignore_errors=True)
