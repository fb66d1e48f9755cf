"""The ASGI application behind every service: routing, limits, auth, batching, metrics.

It is written against ASGI directly (no framework on the request path) because every
microsecond here is a microsecond of each request: the hot path is one dict lookup,
one body read, one pydantic-core validation, a queue, and one JSON dump.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
import traceback
from collections.abc import Awaitable, Callable
from concurrent.futures import Future as ThreadFuture
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pydantic import ValidationError

from lepton.errors import (
    DeadlineExceededError,
    LeptonError,
    OverloadedError,
    PayloadTooLargeError,
    RequestError,
    ServingError,
    UnauthorizedError,
)
from lepton.serve._batcher import Batcher
from lepton.serve._body import decode_body, validation_message
from lepton.serve._handler import Route
from lepton.serve._metrics import CONTENT_TYPE_LATEST, ServiceMetrics
from lepton.serve._openapi import openapi

__all__ = ["ServiceApp"]

log = logging.getLogger("lepton.serve")
Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

_JSON = b"application/json"
_BUILTIN = frozenset({"/", "/healthz", "/readyz", "/metrics", "/openapi.json"})


class _Runner:
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


class ServiceApp:
    """An ASGI app serving one :class:`~lepton.Service` instance (already set up).

    Args:
        service: The service, after ``setup()``.
        routes: Its routes (from ``Service.routes``).
        token: When set, every route but ``/healthz`` and ``/readyz`` needs
            ``Authorization: Bearer <token>``.
        max_body_bytes: Larger bodies answer 413.
        title: The name shown in ``/`` and the OpenAPI document.
    """

    def __init__(
        self,
        service: Any,
        routes: list[Route],
        *,
        token: str | None = None,
        max_body_bytes: int = 10 * 1024 * 1024,
        title: str | None = None,
    ) -> None:
        self.service = service
        self.title = title or type(service).__name__
        self.metrics = ServiceMetrics()
        self.routes = {(r.method, r.path): r for r in routes}
        self.runners = {r.path: _Runner(r, self.metrics) for r in routes}
        self._token = token.encode() if token else None
        self.max_body_bytes = max_body_bytes
        self.ready = True
        self.draining = False
        self.inflight = 0
        self.working = 0  # requests past the drain check: the ones a drain waits for
        self._openapi: bytes | None = None

    # -- lifecycle ---------------------------------------------------------------------

    def drain(self) -> None:
        """Stop taking work: readiness fails and new requests get 503."""
        self.draining = True
        self.ready = False

    async def close(self) -> None:
        """Release queues and threads (after draining)."""
        for runner in self.runners.values():
            await runner.close()

    # -- ASGI --------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await self.close()
                    await send({"type": "lifespan.shutdown.complete"})
                    return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        path: str = scope["path"]
        method: str = scope["method"]
        route = self.routes.get((method, path))
        label = route.path if route is not None else path if path in _BUILTIN else "other"
        self.inflight += 1
        self.metrics.inflight.inc()
        status = 500
        try:
            status = await self._dispatch(route, scope, receive, send)
        except ServingError as exc:
            status = exc.status
            self.metrics.error(label, exc.code)
            details = exc.details if isinstance(exc, _InvalidBodyError) else None
            await _error(send, exc.status, exc.code, exc.message, retry_after=exc.retry_after,
                         details=details, close=self.draining)  # fmt: skip
        except LeptonError as exc:
            status = 422 if exc.code in ("invalid_shape", "invalid_labels") else 500
            self.metrics.error(label, exc.code)
            await _error(send, status, exc.code, exc.message)
        except Exception:  # a bug in a handler: log it, never show a traceback to the client
            status = 500
            log.error("handler %s failed:\n%s", label, traceback.format_exc())
            self.metrics.error(label, "internal_error")
            await _error(send, 500, "internal_error",
                         "the handler raised an unexpected error; see the server log")  # fmt: skip
        finally:
            self.inflight -= 1
            self.metrics.inflight.dec()
            self.metrics.observe(label, status, time.perf_counter() - started)

    async def _dispatch(
        self, route: Route | None, scope: Scope, receive: Receive, send: Send
    ) -> int:
        path: str = scope["path"]
        if route is None:
            return await self._builtin(path, scope, receive, send)
        headers = _headers(scope)
        if self._token is not None:
            self._authorize(headers)
        if self.draining:
            raise OverloadedError("the service is shutting down; retry on another replica",
                                  retry_after=1.0)  # fmt: skip
        self.working += 1
        try:
            body = await self._read_body(headers, receive)
            args = _arguments(route, headers, body)
            timeout = _timeout(headers, route.options.timeout_s)
            if route.stream:
                return await self._stream(route, args, send, timeout)
            result = await self.runners[route.path].call(args, timeout)
            payload = route.response.dump_json(result)
            await _respond(send, 200, payload, _JSON)
            return 200
        finally:
            self.working -= 1

    async def _builtin(self, path: str, scope: Scope, receive: Receive, send: Send) -> int:
        method = scope["method"]
        if path == "/healthz" and method == "GET":
            await _respond(send, 200, b'{"status":"ok"}', _JSON)
            return 200
        if path == "/readyz" and method == "GET":
            if self.ready and not self.draining:
                await _respond(send, 200, b'{"status":"ready"}', _JSON)
                return 200
            state = b"draining" if self.draining else b"loading"
            await _respond(send, 503, b'{"status":"' + state + b'"}', _JSON, close=self.draining)
            return 503
        if self._token is not None:
            self._authorize(_headers(scope))
        if path == "/metrics" and method == "GET":
            await _respond(send, 200, self.metrics.exposition(), CONTENT_TYPE_LATEST.encode())
            return 200
        if path == "/openapi.json" and method == "GET":
            if self._openapi is None:
                doc = openapi(self.title, list(self.routes.values()))
                self._openapi = json.dumps(doc).encode()
            await _respond(send, 200, self._openapi, _JSON)
            return 200
        if path == "/" and method == "GET":
            index = {
                "service": self.title,
                "routes": [
                    {
                        "method": r.method,
                        "path": r.path,
                        "batch_size": r.options.batch_size,
                        "stream": r.stream,
                    }
                    for r in self.routes.values()
                ],
                "openapi": "/openapi.json",
            }
            await _respond(send, 200, json.dumps(index).encode(), _JSON)
            return 200
        if path in _BUILTIN or any(p == path for _, p in self.routes):
            raise _MethodNotAllowedError(f"{method} is not allowed on {path}")
        raise _NotFoundError(f"no route {path}; GET / lists the routes")

    def _authorize(self, headers: dict[bytes, bytes]) -> None:
        assert self._token is not None
        given = headers.get(b"authorization", b"")
        scheme, _, token = given.partition(b" ")
        if scheme.lower() != b"bearer" or not hmac.compare_digest(token.strip(), self._token):
            raise UnauthorizedError(
                "missing or wrong bearer token; send 'Authorization: Bearer <token>'"
            )

    async def _read_body(self, headers: dict[bytes, bytes], receive: Receive) -> bytes:
        limit = self.max_body_bytes
        declared = headers.get(b"content-length")
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                raise RequestError("Content-Length is not a number") from None
            if size > limit:
                raise PayloadTooLargeError(
                    f"the body has {size:,} bytes; this service accepts at most {limit:,}"
                )
        message = await receive()
        body: bytes = message.get("body", b"")
        if not message.get("more_body", False):
            if len(body) > limit:
                raise PayloadTooLargeError(f"the body is over this service's {limit:,} bytes")
            return body
        chunks = [body]
        total = len(body)
        while message.get("more_body", False):
            message = await receive()
            if message["type"] == "http.disconnect":
                raise RequestError("the client disconnected")
            chunk = message.get("body", b"")
            total += len(chunk)
            if total > limit:
                raise PayloadTooLargeError(f"the body is over this service's {limit:,} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    async def _stream(self, route: Route, args: dict[str, Any], send: Send, timeout: float) -> int:
        """Send a generator's items as they come; ``timeout`` bounds the wait for each."""
        runner = self.runners[route.path]
        loop = asyncio.get_running_loop()
        items = route.fn(**args)
        content = b"text/plain; charset=utf-8" if route.text_stream else b"application/x-ndjson"
        headers = [(b"content-type", content), (b"cache-control", b"no-cache")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        done: Any = object()
        try:
            while True:
                if route.is_async:
                    item = await asyncio.wait_for(anext(items, done), timeout)
                else:
                    fetch = loop.run_in_executor(runner.executor, next, items, done)
                    item = await asyncio.wait_for(fetch, timeout)
                if item is done:
                    break
                chunk = (
                    item.encode() if route.text_stream else route.response.dump_json(item) + b"\n"
                )
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except Exception as exc:  # the status is sent: report in-band, then end the stream
            if isinstance(exc, asyncio.TimeoutError):
                exc = DeadlineExceededError(f"no item within {timeout:g}s; the stream ends")
            else:
                log.error("stream %s failed:\n%s", route.path, traceback.format_exc())
            code = exc.code if isinstance(exc, LeptonError) else "internal_error"
            if not route.text_stream:
                line = json.dumps({"error": {"code": code, "message": str(exc)}}) + "\n"
                await send({"type": "http.response.body", "body": line.encode(), "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return 200


class _InvalidBodyError(RequestError):
    code = "validation_error"
    status = 422

    def __init__(self, exc: ValidationError) -> None:
        message, self.details = validation_message(exc)
        super().__init__(message)


def _arguments(route: Route, headers: dict[bytes, bytes], body: bytes) -> dict[str, Any]:
    # Only the request body's validation is a 422: a ValidationError raised later, inside
    # the handler, is the handler's bug (500).
    if route.request is None:
        return {}
    try:
        return route.arguments(decode_body(route, headers.get(b"content-type", b""), body))
    except ValidationError as exc:
        raise _InvalidBodyError(exc) from None


class _NotFoundError(ServingError):
    code = "not_found"
    status = 404


class _MethodNotAllowedError(ServingError):
    code = "method_not_allowed"
    status = 405


def _headers(scope: Scope) -> dict[bytes, bytes]:
    return dict(scope["headers"])


def _timeout(headers: dict[bytes, bytes], default: float) -> float:
    asked = headers.get(b"x-request-timeout")
    if asked is None:
        return default
    try:
        value = float(asked)
    except ValueError:
        raise RequestError("X-Request-Timeout must be a number of seconds") from None
    if not value > 0:
        raise RequestError("X-Request-Timeout must be > 0 seconds")
    return min(value, default)


async def _respond(
    send: Send, status: int, body: bytes, content_type: bytes, *,
    extra: list[tuple[bytes, bytes]] | None = None, close: bool = False,
) -> None:  # fmt: skip
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    if extra:
        headers.extend(extra)
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _error(
    send: Send, status: int, code: str, message: str, *, retry_after: float | None = None,
    details: list[dict[str, Any]] | None = None, close: bool = False,
) -> None:  # fmt: skip
    error: dict[str, Any] = {"code": code, "message": message}
    if details:
        error["details"] = details
    extra = [(b"retry-after", str(max(1, round(retry_after))).encode())] if retry_after else None
    await _respond(send, status, json.dumps({"error": error}).encode(), _JSON, extra=extra,
                   close=close)  # fmt: skip
