"""Helpers every tier shares: wait for a condition, run an ASGI service in-process, and
receive webhooks on 127.0.0.1.

``tests/`` is on ``sys.path`` (see ``conftest.py``), so a test imports them with
``from helpers import run_app, wait_until``.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Awaitable, Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar

import httpx

T = TypeVar("T")
Scenario = Callable[[httpx.AsyncClient, Any], Awaitable[Any]]


def wait_until(
    predicate: Callable[[], T],
    timeout: float = 10.0,
    *,
    interval: float = 0.02,
    message: str | Callable[[], str] = "condition not met",
) -> T:
    """Poll ``predicate`` until it returns something truthy; return that value.

    Synchronization by polling with a deadline, never by a fixed sleep: the wait is as
    short as the machine allows and fails loudly when the deadline passes.

    Args:
        predicate: Called until it returns a truthy value (exceptions propagate).
        timeout: Seconds before the test fails.
        interval: Seconds between two calls.
        message: What the failure says (or a function that builds it then, e.g. to
            include a log that was written meanwhile).

    Raises:
        AssertionError: The deadline passed; the message says what was awaited.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            text = message() if callable(message) else message
            raise AssertionError(f"after {timeout:g} s: {text}")
        time.sleep(interval)


def run_app(
    target: Any, scenario: Scenario, base_url: str = "http://127.0.0.1:8100", **asgi: Any
) -> Any:
    """Run ``scenario(client, app)`` in a fresh event loop against ``target``: a service
    (its ``asgi(**asgi)`` app is built here) or an app built already.

    ``base_url`` names the host the app's Host check accepts by default (a service's
    app counts itself bound to 127.0.0.1:8100). The app's handler threads are shut down
    inside the same loop, so nothing outlives the test.
    """

    async def main() -> Any:
        app = target.asgi(**asgi) if hasattr(target, "asgi") else target
        transport = httpx.ASGITransport(app=app)
        try:
            async with httpx.AsyncClient(transport=transport, base_url=base_url) as client:
                return await scenario(client, app)
        finally:
            await app.close()
            for runner in app.runners.values():  # let handler threads finish in this loop
                if runner.executor is not None:
                    await asyncio.to_thread(runner.executor.shutdown, wait=True)

    return asyncio.run(main())


class WebhookReceiver:
    """A real webhook receiver: answers the statuses in ``plan`` in turn (then 200)."""

    def __init__(self, plan: list[int]) -> None:
        self.plan, self.bodies = list(plan), []  # type: list[int], list[dict[str, Any]]
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                size = int(self.headers["content-length"])
                receiver.bodies.append(json.loads(self.rfile.read(size)))
                status = receiver.plan.pop(0) if receiver.plan else 200
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server: ThreadingHTTPServer | None = server
        self.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
        threading.Thread(target=server.serve_forever, daemon=True).start()

    def close(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


def one_slot_jobs(database: Any) -> Any:
    """A :class:`~lepton.platform.jobs.JobManager` over ``database`` with one CPU slot and
    4 GiB, retrying fast: the job tests tick it themselves (:func:`wait_for_job`)."""
    from lepton.config import get_settings
    from lepton.platform.jobs import JobManager
    from lepton.platform.jobs._executor import Capacity

    capacity = Capacity(cpus=1, gpus=0, memory_mb=4096)
    return JobManager(database, get_settings().home, None, capacity=capacity, backoff_s=0.05)


def wait_for_job(
    manager: Any, job_id: int, done: Callable[[Any], bool] | None = None, timeout: float = 300.0
) -> Any:
    """Tick ``manager`` until job ``job_id``'s view satisfies ``done`` (by default: it
    ended); return the view. The failure message is the job's log."""
    from lepton.platform.jobs._specs import TERMINAL

    def ready() -> Any:
        manager.tick()
        view = manager.get(job_id)
        return view if (done(view) if done is not None else view.state in TERMINAL) else None

    return wait_until(ready, timeout, interval=0.05, message=lambda: manager.logs(job_id)[0])
