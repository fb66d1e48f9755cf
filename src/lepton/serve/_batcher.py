"""Dynamic batching: gather requests until the batch is full or the wait expires.

The wait is adaptive. It is counted from the *oldest* request's arrival, so a request
that already waited while the model was busy is not held again, and it ends early when
the recent arrival rate says the batch cannot fill within what is left of it: under a
light load a request goes straight to the model, under a heavy one batches fill up.
Load shedding is a separate setting (``max_queue``), never mixed with the wait window.

One bad input must not fail its neighbours: when the handler raises on a batch, each
half is run again, down to single requests, and only the requests it fails on alone
fail (a 422 when it answered the others, since then the input is the problem).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from lepton.errors import (
    DeadlineExceededError,
    LeptonError,
    OverloadedError,
    RequestError,
    ServingError,
)

__all__ = ["Batcher"]

log = logging.getLogger("lepton.serve")


@dataclass(slots=True)
class _Item:
    value: Any
    future: asyncio.Future[Any]
    deadline: float
    arrived: float


class Batcher:
    """One queue and one consumer per batched route.

    Args:
        run: Called with a list of request values; returns a list of results of the same
            length (awaited: the caller decides whether it runs in a thread). An exception
            in place of a result fails only that request. When it raises, it is called
            again on each half of the batch, down to single requests, so that only the
            requests it fails on fail (see :meth:`_execute`).
        batch_size: The largest batch.
        max_wait_s: The longest the oldest request waits for the batch to fill.
        max_queue: Waiting requests beyond this are refused with :class:`OverloadedError`.
        on_batch: Called with each executed batch's size (metrics).
    """

    def __init__(
        self,
        run: Callable[[list[Any]], Awaitable[list[Any]]],
        *,
        batch_size: int,
        max_wait_s: float,
        max_queue: int,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self._run = run
        self.batch_size = batch_size
        self.max_wait_s = max_wait_s
        self.max_queue = max_queue
        self._on_batch = on_batch
        self._queue: deque[_Item] = deque()
        self._arrived: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._gap = max_wait_s  # EWMA of the time between arrivals
        self._last_gap = max_wait_s  # the latest time between two arrivals
        self._last_arrival = 0.0
        self.busy_since: float | None = None

    @property
    def depth(self) -> int:
        """Requests waiting (not yet in a running batch)."""
        return len(self._queue)

    def submit(self, value: Any, deadline: float) -> asyncio.Future[Any]:
        """Queue one request; its future resolves to its own result."""
        if len(self._queue) >= self.max_queue:
            raise OverloadedError(
                f"the queue is full ({self.max_queue} waiting); retry shortly", retry_after=1.0
            )
        loop = asyncio.get_running_loop()
        if self._task is None:
            self._arrived = asyncio.Event()
            self._task = loop.create_task(self._consume())
        now = time.monotonic()
        if self._last_arrival:
            self._last_gap = now - self._last_arrival
            self._gap = 0.8 * self._gap + 0.2 * self._last_gap
        self._last_arrival = now
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.append(_Item(value, future, deadline, now))
        assert self._arrived is not None
        self._arrived.set()
        return future

    async def close(self) -> None:
        """Stop the consumer; requests still queued get 503."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        while self._queue:
            item = self._queue.popleft()
            if not item.future.done():
                item.future.set_exception(OverloadedError("the service is stopping"))

    async def _consume(self) -> None:
        assert self._arrived is not None
        while True:
            while not self._queue:
                self._arrived.clear()
                await self._arrived.wait()
            await self._fill()
            batch = self._take()
            if batch:
                await self._execute(batch)

    async def _fill(self) -> None:
        assert self._arrived is not None
        # Wait from the oldest request's arrival, not from now, and only while the
        # arrival rate makes it likely the batch still grows: the expected next gap is the
        # slowest of the average, the latest gap and the silence since the last arrival,
        # so a lull (or a lone request after a burst) is not held for the whole window.
        oldest = self._queue[0].arrived
        while len(self._queue) < self.batch_size:
            now = time.monotonic()
            remaining = oldest + self.max_wait_s - now
            expected = max(self._gap, self._last_gap, now - self._last_arrival)
            if remaining <= 0 or expected > remaining:
                return
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except asyncio.TimeoutError:
                return

    def _take(self) -> list[_Item]:
        batch: list[_Item] = []
        now = time.monotonic()
        while self._queue and len(batch) < self.batch_size:
            item = self._queue.popleft()
            if item.future.done():  # the client gave up, or its deadline fired
                continue
            if item.deadline <= now:
                item.future.set_exception(
                    DeadlineExceededError("the request's deadline passed while it was queued")
                )
                continue
            batch.append(item)
        return batch

    async def _execute(self, batch: list[_Item]) -> None:
        if self._on_batch is not None:
            self._on_batch(len(batch))
        self.busy_since = time.monotonic()
        try:
            answered, failures = await self._isolate(batch)
        except BaseException:  # cancelled: the service stops
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(OverloadedError("the service is stopping"))
            raise
        finally:
            self.busy_since = None
        for item, exc in failures:
            if item.future.done():
                continue
            if answered and not isinstance(exc, LeptonError):
                # The handler ran on other inputs of this batch: this one is the problem.
                log.warning("a batched handler failed on one input of %d: %r",
                            len(batch), exc, exc_info=exc)  # fmt: skip
                exc = RequestError(
                    f"the handler failed on this input ({type(exc).__name__}) while it "
                    f"answered others; check the input's shape and values",
                    status=422, code="invalid_input",
                )  # fmt: skip
            item.future.set_exception(exc)

    async def _isolate(self, items: list[_Item]) -> tuple[int, list[tuple[_Item, Exception]]]:
        """Run ``items``; when the call fails, run each half again, down to single items.

        Returns how many items the handler answered, and each item it failed on alone.
        """
        items = [item for item in items if not item.future.done()]
        if not items:
            return 0, []
        try:
            results = await self._run([item.value for item in items])
        except Exception as exc:
            if len(items) == 1:
                return 0, [(items[0], exc)]
            middle = len(items) // 2
            first, first_failures = await self._isolate(items[:middle])
            second, second_failures = await self._isolate(items[middle:])
            return first + second, first_failures + second_failures
        if not isinstance(results, (list, tuple)) or len(results) != len(items):
            # The handler's bug, whatever the inputs: splitting the batch would not help.
            got = len(results) if isinstance(results, (list, tuple)) else type(results).__name__
            error = ServingError(
                f"a batched handler must return a list with one result per input "
                f"(got {got} for {len(items)})"
            )
            return 0, [(item, error) for item in items]
        for item, result in zip(items, results, strict=False):
            if item.future.done():
                continue
            if isinstance(result, Exception):  # the handler rejected just this request
                item.future.set_exception(result)
            else:
                item.future.set_result(result)
        return len(items), []
