"""One replica: set the service up, then serve it on the socket the supervisor bound.

Started by :mod:`lepton.serve._supervisor` as ``python -m lepton.serve._worker``; its
spec comes in ``LEPTON_SERVE_SPEC`` (JSON) and its token in ``LEPTON_SERVE_TOKEN``.
On SIGTERM it drains: readiness fails, new requests get 503, requests already taken
finish (up to the grace period), then it exits.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import sys
import time
from collections.abc import Iterator
from typing import Any

import uvicorn

from lepton.errors import LeptonError
from lepton.serve._connections import ConnectionLimits
from lepton.serve._hosts import HostPolicy
from lepton.serve._http_server import server_config

__all__ = ["EXIT_CONFIG", "build_service", "main"]

EXIT_CONFIG = 3  # a setup error that a restart cannot fix
log = logging.getLogger("lepton.serve")


def build_service(spec: dict[str, Any]) -> Any:
    """The service instance a spec names (a user class, or a registered model)."""
    if spec.get("model"):
        from lepton.serve._by_model import service_for_model

        # a ModelService, or the service its architecture's package serves it with
        return service_for_model(spec["model"])
    from lepton.serve._service import load_service_class

    return load_service_class(spec["target"])()


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # the replica installs its own handlers: SIGTERM drains instead of exiting


async def _serve(app: Any, sock: socket.socket, spec: dict[str, Any]) -> None:
    config = server_config(
        app,
        limits=ConnectionLimits(**spec.get("limits", {})),
        lifespan="off",
        loop="none",
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=max(1, int(spec["grace_s"])),
        backlog=2048,
    )
    server = _Server(config)
    loop = asyncio.get_running_loop()
    grace = float(spec["grace_s"])

    async def drain() -> None:
        app.drain()
        deadline = time.monotonic() + grace
        while app.working and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        server.should_exit = True

    tasks: list[asyncio.Task[None]] = []

    def on_signal() -> None:
        if app.draining:
            server.force_exit = True
        else:
            tasks.append(loop.create_task(drain()))

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)

    async def announce() -> None:
        while not server.started:
            await asyncio.sleep(0.005)
        ready_fd = spec.get("ready_fd")
        if ready_fd is not None:
            os.write(ready_fd, b"ready\n")
            os.close(ready_fd)

    announcer = loop.create_task(announce())
    await server.serve(sockets=[sock])
    announcer.cancel()
    await app.close()


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def _die_with_parent(supervisor: int | None) -> None:
    # If the supervisor is killed outright (kill -9), its replicas must not keep serving
    # on the inherited socket: ask Linux for SIGTERM (a drain) when the parent dies.
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    # The supervisor may have died while this interpreter was still starting, before
    # prctl took effect: then this process was already handed to another parent.
    if supervisor is not None and os.getppid() != supervisor:
        log.warning("the supervisor (pid %d) is gone; this replica stops", supervisor)
        sys.exit(0)


def main() -> None:
    """Entry point of a replica process."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    spec = json.loads(os.environ["LEPTON_SERVE_SPEC"])
    if spec.get("workdir"):  # also when the supervisor was killed and cannot remove it
        atexit.register(shutil.rmtree, spec["workdir"], True)
    # Until it serves (and drains on SIGTERM instead), SIGTERM ends it through exit
    # handlers, not at once: its working directory is removed even if it never served.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    _die_with_parent(spec.get("supervisor"))
    sock = socket.socket(fileno=int(spec["fd"]))
    try:
        import torch

        host, port = sock.getsockname()[:2]
        hosts = HostPolicy.for_address(host, port, spec.get("allowed_hosts") or [])
        torch.set_num_threads(int(spec.get("threads") or 1))
        service = build_service(spec)
        app = service.asgi(token=os.environ.get("LEPTON_SERVE_TOKEN") or None,
                           max_body_bytes=int(spec["max_body_bytes"]), hosts=hosts)  # fmt: skip
    except LeptonError as exc:
        print(f"error ({exc.code}): {exc.message}", file=sys.stderr, flush=True)
        sys.exit(EXIT_CONFIG)
    if _has("uvloop"):
        import uvloop

        runner: Any = uvloop.run
    else:
        runner = asyncio.run
    try:
        runner(_serve(app, sock, spec))
    finally:
        service.teardown()


if __name__ == "__main__":
    main()
