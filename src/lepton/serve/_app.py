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
from typing import Any

from pydantic import ValidationError

from lepton._wire import error_body
from lepton.errors import (
    DeadlineExceededError,
    InvalidBodyError,
    LeptonError,
    MethodNotAllowedError,
    OverloadedError,
    PayloadTooLargeError,
    RequestError,
    ServingError,
    UnauthorizedError,
)
from lepton.serve._body import decode_body, validation_message
from lepton.serve._handler import Route
from lepton.serve._hosts import HostPolicy
from lepton.serve._metrics import CONTENT_TYPE_LATEST, ServiceMetrics
from lepton.serve._openapi import openapi
from lepton.serve._predlog import PredictionLog
from lepton.serve._runner import Runner

__all__ = ["ServiceApp"]

log = logging.getLogger("lepton.serve")
Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

_JSON = b"application/json"
_BUILTIN = frozenset({"/", "/healthz", "/readyz", "/metrics", "/openapi.json"})


class ServiceApp:
    """An ASGI app serving one :class:`~lepton.Service` instance (already set up).

    Args:
        service: The service, after ``setup()``.
        routes: Its routes (from ``Service.routes``).
        token: When set, every route but ``/healthz`` and ``/readyz`` needs
            ``Authorization: Bearer <token>``.
        max_body_bytes: Larger bodies answer 413.
        title: The name shown in ``/`` and the OpenAPI document.
        hosts: The ``Host`` (and ``Origin``) values answered; any other gets 400 (403
            for an ``Origin``) on every route, built-ins included. Default: loopback
            names on any port (an app served in-process).
    """

    def __init__(
        self,
        service: Any,
        routes: list[Route],
        *,
        token: str | None = None,
        max_body_bytes: int = 10 * 1024 * 1024,
        title: str | None = None,
        hosts: HostPolicy | None = None,
    ) -> None:
        self.service = service
        self.hosts = hosts or HostPolicy.loopback()
        self.title = title or type(service).__name__
        self.metrics = ServiceMetrics()
        self.routes = {(r.method, r.path): r for r in routes}
        self.runners = {r.path: Runner(r, self.metrics) for r in routes}
        self._token = token.encode() if token else None
        self.max_body_bytes = max_body_bytes
        self.ready = True
        self.draining = False
        self.inflight = 0
        self.working = 0  # requests past the drain check: the ones a drain waits for
        self._openapi: bytes | None = None
        self.predlog = PredictionLog.from_env()  # a deployment's prediction_log option

    # -- lifecycle ---------------------------------------------------------------------

    def drain(self) -> None:
        """Stop taking work: readiness fails and new requests get 503."""
        self.draining = True
        self.ready = False

    async def close(self) -> None:
        """Release queues and threads (after draining)."""
        for runner in self.runners.values():
            await runner.close()
        if self.predlog is not None:
            self.predlog.close()

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
            headers = _headers(scope)
            self._check_host(headers)
            status = await self._dispatch(route, headers, scope, receive, send)
        except ServingError as exc:
            status = exc.status
            self.metrics.error(label, exc.code)
            details = exc.details if isinstance(exc, InvalidBodyError) else None
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
        self, route: Route | None, headers: dict[bytes, bytes], scope: Scope, receive: Receive,
        send: Send,
    ) -> int:  # fmt: skip
        path: str = scope["path"]
        if route is None:
            return await self._builtin(path, headers, scope, send)
        if self._token is not None:
            self._authorize(headers)
        if self.draining:
            raise OverloadedError("the service is shutting down; retry on another replica",
                                  retry_after=1.0)  # fmt: skip
        self.working += 1
        try:
            body = await self._read_body(headers, receive)
            args = _arguments(route, headers, body)
            if route.check is not None:  # refuse a bad input alone, before it joins a batch
                route.check(**args)
            timeout = _timeout(headers, route.options.timeout_s)
            if route.stream:
                return await self._stream(route, args, send, timeout)
            result = await self.runners[route.path].call(args, timeout)
            payload = route.response.dump_json(result)
            await _respond(send, 200, payload, _JSON)
            if self.predlog is not None:
                self.predlog.offer(route.path, body, payload)
            return 200
        finally:
            self.working -= 1

    async def _builtin(
        self, path: str, headers: dict[bytes, bytes], scope: Scope, send: Send
    ) -> int:
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
            self._authorize(headers)
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
            raise MethodNotAllowedError(f"{method} is not allowed on {path}")
        raise ServingError(f"no route {path}; GET / lists the routes", status=404, code="not_found")

    def _check_host(self, headers: dict[bytes, bytes]) -> None:
        host = headers.get(b"host")
        if host is None or not self.hosts.allows(host):
            given = host.decode("latin-1")[:100] if host is not None else "no Host header"
            raise RequestError(
                f"Host {given!r} is not this service's address ({self.hosts.describe()}); "
                f"call it by its address, or start it with --allowed-host NAME",
                code="invalid_host",
            )
        origin = headers.get(b"origin")
        if origin is not None and not self.hosts.allows_origin(origin):
            raise ServingError(
                f"requests from the web page at {origin.decode('latin-1')[:100]!r} are refused: "
                f"a page of another site may not call this service",
                status=403, code="forbidden_origin",
            )  # fmt: skip

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
        if message["type"] == "http.disconnect":
            raise RequestError("the client disconnected")
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
                line = json.dumps(error_body(code, str(exc))) + "\n"
                await send({"type": "http.response.body", "body": line.encode(), "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return 200


def _arguments(route: Route, headers: dict[bytes, bytes], body: bytes) -> dict[str, Any]:
    # Only the request body's validation is a 422: a ValidationError raised later, inside
    # the handler, is the handler's bug (500).
    if route.request is None:
        return {}
    try:
        return route.arguments(decode_body(route, headers.get(b"content-type", b""), body))
    except ValidationError as exc:
        message, details = validation_message(exc)
        raise InvalidBodyError(message, details=details) from None


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
    body = error_body(code, message, **({"details": details} if details else {}))
    extra = [(b"retry-after", str(max(1, round(retry_after))).encode())] if retry_after else None
    await _respond(send, status, json.dumps(body).encode(), _JSON, extra=extra,
                   close=close)  # fmt: skip
