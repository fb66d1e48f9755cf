"""The guards in front of every route, outermost first:

1. ``Host`` must name this server (127.0.0.1/localhost/[::1] on its port, or an
   ``allowed_hosts`` entry): a page on another site cannot reach it by DNS rebinding;
2. the caller is found from the headers alone (a bearer token, or the dashboard session
   cookie, looked up in the database off the event loop) and kept in the request's scope
   state, where :func:`~lepton.platform._http.authorize` finds it. A dashboard cookie
   with a state-changing request from another site counts as no caller (403);
3. a request its caller may not make (no valid token on a route that is not public, a
   role below the route's, a route without a rule, or no route at all) reaches the router
   with no body and none of the headers that say how to parse one: nothing of it is read
   or parsed, and it is refused at once (401/403, or the sign-in page for a browser);
4. bodies over ``max_body_bytes`` get 413, whether announced or streamed; without a
   caller (the public routes) the limit is ``max_anonymous_body_bytes``;
5. every state-changing request is written to the audit log: one entry each when the
   caller is known; the refused ones without a caller are counted, one entry per client
   address, action and status a minute with the ``count`` in its detail, so a flood of
   anonymous requests cannot fill the database.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from dataclasses import dataclass
from typing import Any

import anyio.to_thread
from starlette.datastructures import Headers
from starlette.routing import compile_path

from lepton._wire import error_body
from lepton.errors import ForbiddenError, LeptonError
from lepton.platform._auth import Principal
from lepton.platform._http import (
    PRINCIPAL,
    REFUSAL,
    audited,
    iter_routes,
    may_read,
    rule_of,
)
from lepton.platform._state import SAFE_METHODS, Platform, has_credentials

__all__ = ["Guard", "RefusalCounter"]

log = logging.getLogger("lepton.platform")
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

ANONYMOUS = "anonymous"
_BODY_HEADERS = frozenset({b"content-type", b"content-length", b"transfer-encoding"})


class _RouteRules:
    """The rules of the routes a method and path match, known before routing: a refused
    body must be withheld before the route's handler reads the headers that say how to
    parse it."""

    def __init__(self, routes: Iterable[Any]) -> None:
        self._table: list[tuple[str, re.Pattern[str], str | None]] = [
            (method, compile_path(path)[0], rule_of(endpoint))
            for method, path, endpoint in iter_routes(routes)
        ]

    def permit(self, method: str, path: str, principal: Principal | None) -> bool:
        """Whether every route that ``method path`` matches lets ``principal`` go as far as
        its body (no route at all: no)."""
        method = "GET" if method == "HEAD" else method
        rules = [rule for m, regex, rule in self._table if m == method and regex.match(path)]
        return bool(rules) and all(may_read(rule, principal) for rule in rules)


async def _identify(
    platform: Platform, headers: Headers, method: str
) -> tuple[Principal | None, LeptonError | None]:
    """The caller (or ``None``), and why the credentials sent are refused, if they are."""
    if not has_credentials(headers):
        return None, None  # no token to look up: no database query, no thread
    try:
        # a database query: in a worker thread, as FastAPI runs sync routes, so that a
        # slow lookup never holds up the other requests (the health check among them)
        principal = await anyio.to_thread.run_sync(platform.authenticate, headers, method)
    except ForbiddenError as exc:
        return None, exc
    return principal, None


def _has_body(headers: Headers) -> bool:
    return headers.get("content-length", "0") not in ("", "0") or "transfer-encoding" in headers


def _without_body(scope: Scope) -> Scope:
    """``scope`` without the headers that announce and describe a body."""
    scope["headers"] = [(k, v) for k, v in scope["headers"] if k.lower() not in _BODY_HEADERS]
    return scope


async def _no_body() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


def _closing(send: Send) -> Send:
    """``send`` that asks to close the connection: the client may still be sending a body
    we will not read, and must not be able to start another request after it."""

    async def closing(message: Message) -> None:
        if message["type"] == "http.response.start":
            kept = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"connection"]
            message = {**message, "headers": [*kept, (b"connection", b"close")]}
        await send(message)

    return closing


class Guard:
    """The guards of this module as a Starlette middleware class.

    Args:
        app: The app it guards (the rest of the middleware stack and the router).
    """

    def __init__(self, app: ASGIApp) -> None:
        self._app = app
        self._found: tuple[Platform, _RouteRules] | None = None
        self.refusals = RefusalCounter()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        if self._found is None:
            # the app's routes are all there by its first request (routes added later to
            # a running app are matched by nothing here, so refused: deny by default)
            self._found = (scope["app"].state.platform, _RouteRules(scope["app"].routes))
        platform, rules = self._found
        headers = Headers(scope=scope)
        if not platform.config.host_ok(headers.get("host", "")):
            await _send_error(send, 400, "invalid_host", "unknown Host header; see --allowed-host")
            return
        method = scope["method"]
        principal, refusal = await _identify(platform, headers, method)
        state = scope.setdefault("state", {})
        state[PRINCIPAL] = principal
        if refusal is not None:
            state[REFUSAL] = refusal
        if rules.permit(method, scope["path"], principal):
            status = await self._with_body(platform, scope, headers, principal, receive, send)
        else:
            status = await self._refuse(scope, headers, send)
        if method not in SAFE_METHODS and audited(scope.get("endpoint")):
            await self._audit(platform, scope, status, principal)

    async def _refuse(self, scope: Scope, headers: Headers, send: Send) -> int:
        """Route a refused request with no body: its refusal is the route's own (401 JSON
        for the API, the sign-in page for a browser), and no byte of the body is read."""
        status = 500

        async def tracked(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        sender = _closing(tracked) if _has_body(headers) else tracked
        await self._app(_without_body(scope), _no_body, sender)
        return status

    async def _with_body(
        self,
        platform: Platform,
        scope: Scope,
        headers: Headers,
        principal: Principal | None,
        receive: Receive,
        send: Send,
    ) -> int:
        """Run the route, counting its body against the limit for this caller."""
        limit, too_large = platform.config.max_body_bytes, _too_large
        if principal is None:  # a public route: no reason to take much from a stranger
            limit = min(limit, platform.config.max_anonymous_body_bytes)
            too_large = _too_large_anonymous
        try:
            announced = int(headers.get("content-length", "0"))
        except ValueError:
            announced = 0
        if announced > limit:
            await _send_error(send, 413, "payload_too_large", too_large(limit), close=True)
            return 413
        seen = 0
        started = refused = withheld = False
        status = 500

        async def counted_receive() -> Message:
            # Past the limit, answer 413 ourselves and tell the app the client has gone,
            # so it stops reading (an exception here would become FastAPI's generic 400).
            nonlocal seen, refused, status, withheld
            if refused or withheld:
                return {"type": "http.disconnect"}
            if not may_read(rule_of(scope.get("endpoint")), principal):
                withheld = True  # the route the router chose refuses this caller
                return await _no_body()
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    refused, status = True, 413
                    if not started:
                        await _send_error(
                            send, 413, "payload_too_large", too_large(limit), close=True
                        )
                    return {"type": "http.disconnect"}
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal started, status
            if refused:
                return
            if message["type"] == "http.response.start":
                started, status = True, message["status"]
            await send(message)

        with contextlib.suppress(_DisconnectedError):
            await self._app(scope, counted_receive, tracked_send)
        return status

    async def _audit(
        self, platform: Platform, scope: Scope, status: int, principal: Principal | None
    ) -> None:
        route = scope.get("route")
        action = f"{scope['method']} {getattr(route, 'path', '(no route)')}"
        target = scope.get("path", "")
        if principal is None:
            client = scope.get("client")
            address = str(client[0]) if client else "(unknown)"
            await self.refusals.count(platform, address, action, target, status)
            return
        detail = {k: str(v) for k, v in (scope.get("path_params") or {}).items()}
        try:
            await anyio.to_thread.run_sync(
                platform.audit, principal.name, action, target, status, detail
            )
        except Exception:  # the answer is sent already; a lost entry must be loud, not fatal
            log.exception("could not write the audit log entry")


@dataclass
class _Tally:
    """Refused requests without a caller from one client, for one action and status."""

    client: str
    action: str
    target: str
    status: int
    started: float  # time.monotonic() of the first one
    count: int = 0
    written: int = 0  # the count the audit entry holds
    entry_id: int | None = None


class RefusalCounter:
    """Refused requests without a caller, counted into the audit log: one entry per client
    address, action and status each ``window_s``, its ``count`` kept up to date in the
    entry's detail. Past ``max_keys`` such entries open at once, the other clients share
    one entry (client ``*``), so a flood from many addresses is bounded too.

    Counting runs on the event loop; one write at a time goes to the database, in a
    worker thread, carrying every count that arrived meanwhile.
    """

    def __init__(self, window_s: float = 60.0, max_keys: int = 1000) -> None:
        self.window_s, self.max_keys = window_s, max_keys
        self._open: dict[tuple[str, str, int], _Tally] = {}
        self._closed: list[_Tally] = []  # out of their window, with counts left to write
        self._writing = False

    async def count(
        self, platform: Platform, client: str, action: str, target: str, status: int
    ) -> None:
        """Count one refused request; returns once its count is in the database, or is
        carried by a write already under way."""
        now = time.monotonic()
        while self._open:  # oldest first: a dict keeps the order tallies were opened in
            oldest = next(iter(self._open))
            if now - self._open[oldest].started < self.window_s:
                break
            ended = self._open.pop(oldest)
            if ended.written < ended.count:
                self._closed.append(ended)
        key = (client, action, status)
        if key not in self._open and len(self._open) >= self.max_keys:
            client = "*"
            key = (client, action, status)
        found = self._open.get(key)
        if found is None:
            found = self._open[key] = _Tally(client, action, target, status, now)
        found.count += 1
        if self._writing:
            return
        self._writing = True
        try:
            await self._write(platform)
        finally:
            self._writing = False

    async def _write(self, platform: Platform) -> None:
        while True:
            batch = [
                (tally, tally.count)
                for tally in (*self._closed, *self._open.values())
                if tally.written < tally.count
            ]
            if not batch:
                return
            try:
                ids = await anyio.to_thread.run_sync(_write_tallies, platform, batch, self.window_s)
            except Exception:  # a lost count must be loud, not fatal
                log.exception("could not write the audit log's count of refused requests")
                ids = [tally.entry_id for tally, _ in batch]
            for (tally, count), entry_id in zip(batch, ids, strict=True):
                tally.entry_id, tally.written = entry_id, count
            self._closed = [t for t in self._closed if t.written < t.count]


def _write_tallies(
    platform: Platform, batch: list[tuple[_Tally, int]], window_s: float
) -> list[int | None]:
    ids: list[int | None] = []
    for tally, count in batch:
        if tally.entry_id is None:
            detail = {"count": count, "client": tally.client, "window_s": window_s}
            ids.append(platform.audit(ANONYMOUS, tally.action, tally.target, tally.status, detail))
        else:
            platform.recount_audit(tally.entry_id, count)
            ids.append(tally.entry_id)
    return ids


try:
    from starlette.requests import ClientDisconnect as _DisconnectedError
except ImportError:  # pragma: no cover
    _DisconnectedError = OSError  # type: ignore[misc,assignment]


def _too_large(limit: int) -> str:
    return f"request body over the server's limit of {limit:,} bytes (see --max-body-mb)"


def _too_large_anonymous(limit: int) -> str:
    return (
        f"request body over the limit of {limit:,} bytes for a request without a token; "
        f"send 'Authorization: Bearer <token>'"
    )


async def _send_error(
    send: Send, status: int, code: str, message: str, *, close: bool = False
) -> None:
    body = json.dumps(error_body(code, message)).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
