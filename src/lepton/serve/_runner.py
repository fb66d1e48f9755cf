"""Running one route's handler: in its batcher, its thread pool, or the event loop."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import Future as ThreadFuture
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from lepton.errors import DeadlineExceededError, OverloadedError
from lepton.serve._batcher import Batcher
from lepton.serve._handler import Route
from lepton.serve._metrics import ServiceMetrics

__all__ = ["Runner"]


class Runner:
    """Runs one route's handler: in a batcher, a thread pool, or the event loop."""

    def __init__(self, route: Route, metrics: ServiceMetrics) -> None:
        self.route = route
        self.metrics = metrics
        self.pending = 0
        self.executor: ThreadPoolExecutor | None = None
        if not route.is_async:
            self.executor = ThreadPoolExecutor(
                max_workers=route.options.workers, thread_name_prefix=f"lepton-{route.name}"
            )
        self.batcher: Batcher | None = None
        if route.options.batched:
            self.batcher = Batcher(
                self._run_batch,
                batch_size=route.options.batch_size,
                max_wait_s=route.options.max_wait_ms / 1000,
                max_queue=route.options.max_queue,
                on_batch=lambda n: metrics.batch(route.path, n),
            )

    def _call_batch(self, values: list[dict[str, Any]]) -> Any:
        return self.route.fn(**{p: [v[p] for v in values] for p in self.route.params})

    async def _run_batch(self, values: list[dict[str, Any]]) -> list[Any]:
        self.metrics.queue(self.route.path, self.batcher.depth if self.batcher else 0)
        if self.route.is_async:
            return await self._call_batch(values)  # type: ignore[no-any-return]
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, self._call_batch, values)

    def call(self, args: dict[str, Any], timeout: float) -> asyncio.Future[Any]:
        """Start one request; the future resolves to its result or a ServingError."""
        loop = asyncio.get_running_loop()
        if self.batcher is not None:
            outer = self.batcher.submit(args, time.monotonic() + timeout)
            self.metrics.queue(self.route.path, self.batcher.depth)
            stop: Callable[[], Any] = lambda: None  # noqa: E731 - queued items expire in the batcher
        else:
            limit = self.route.options.max_queue + self.route.options.workers
            if self.pending >= limit:
                raise OverloadedError(
                    f"{self.pending} requests are already waiting; retry shortly", retry_after=1.0
                )
            outer = loop.create_future()
            self.pending += 1
            outer.add_done_callback(self._done)
            if self.route.is_async:
                task = loop.create_task(self.route.fn(**args))
                task.add_done_callback(lambda t: _settle(outer, t))
                stop = task.cancel
            else:
                assert self.executor is not None
                job = self.executor.submit(self.route.fn, **args)
                job.add_done_callback(lambda j: loop.call_soon_threadsafe(_settle, outer, j))
                stop = job.cancel
        timer = loop.call_later(timeout, _expire, outer, stop)
        outer.add_done_callback(lambda _: timer.cancel())
        return outer

    def _done(self, _: Any) -> None:
        self.pending -= 1

    async def close(self) -> None:
        if self.batcher is not None:
            await self.batcher.close()
        if self.executor is not None:
            self.executor.shutdown(wait=False, cancel_futures=True)


def _settle(outer: asyncio.Future[Any], job: ThreadFuture[Any] | asyncio.Future[Any]) -> None:
    if outer.done():
        return
    if job.cancelled():
        outer.set_exception(DeadlineExceededError("the request was cancelled at its deadline"))
    elif (exc := job.exception()) is not None:
        outer.set_exception(exc)
    else:
        outer.set_result(job.result())


def _expire(outer: asyncio.Future[Any], stop: Callable[[], Any]) -> None:
    if not outer.done():
        stop()
        outer.set_exception(
            DeadlineExceededError("the request was not answered within its deadline")
        )
