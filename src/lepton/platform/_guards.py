"""The guards in front of every route, outermost first:

1. ``Host`` must name this server (127.0.0.1/localhost/[::1] on its port, or an
   ``allowed_hosts`` entry): a page on another site cannot reach it by DNS rebinding;
2. request bodies over ``max_body_bytes`` get 413, whether announced or streamed;
3. :func:`~lepton.platform._http.authorize` (every route: deny by default, then roles);
   a state-changing request authenticated by the dashboard cookie must also carry an
   ``Origin`` (or ``Referer``) of this server, so another site cannot forge it;
4. every state-changing request is written to the audit log, refused ones included.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from lepton.platform._auth import Principal
from lepton.platform._http import audited, error_body
from lepton.platform._state import SAFE_METHODS, Platform

__all__ = ["Guard"]

log = logging.getLogger("lepton.platform")
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def _guards(app: ASGIApp, platform_of: Callable[[], Platform]) -> ASGIApp:
    async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        platform = platform_of()
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if not platform.config.host_ok(headers.get("host", "")):
            await _send_error(send, 400, "invalid_host", "unknown Host header; see --allowed-host")
            return
        limit = platform.config.max_body_bytes
        try:
            announced = int(headers.get("content-length", "0"))
        except ValueError:
            announced = 0
        if announced > limit:
            await _send_error(send, 413, "payload_too_large", _too_large(limit))
            return
        seen = 0
        started = refused = False
        status = 500

        async def counted_receive() -> Message:
            # Past the limit, answer 413 ourselves and tell the app the client has gone,
            # so it stops reading (an exception here would become FastAPI's generic 400).
            nonlocal seen, refused, status
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    refused, status = True, 413
                    if not started:
                        await _send_error(send, 413, "payload_too_large", _too_large(limit))
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
            await app(scope, counted_receive, tracked_send)
        if scope["method"] not in SAFE_METHODS and audited(scope.get("endpoint")):
            _audit(platform, scope, status)

    return guarded


try:
    from starlette.requests import ClientDisconnect as _DisconnectedError
except ImportError:  # pragma: no cover
    _DisconnectedError = OSError  # type: ignore[misc,assignment]


def _too_large(limit: int) -> str:
    return f"request body over the server's limit of {limit:,} bytes (see --max-body-mb)"


async def _send_error(send: Send, status: int, code: str, message: str) -> None:
    body = json.dumps(error_body(code, message)).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", b"%d" % len(body)),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _audit(platform: Platform, scope: Scope, status: int) -> None:
    principal = (scope.get("state") or {}).get("principal")
    route = scope.get("route")
    try:
        platform.audit(
            principal.name if isinstance(principal, Principal) else "anonymous",
            f"{scope['method']} {getattr(route, 'path', '(no route)')}",
            scope.get("path", ""),
            status,
            {k: str(v) for k, v in (scope.get("path_params") or {}).items()},
        )
    except Exception:  # the answer is sent already; a lost entry must be loud, not fatal
        log.exception("could not write the audit log entry")


class Guard:
    """:func:`_guards` as a Starlette middleware class."""

    def __init__(self, app: ASGIApp) -> None:
        self._platform: Platform | None = None
        self._app = app
        self._guarded = _guards(app, lambda: self._require())

    def _require(self) -> Platform:
        assert self._platform is not None
        return self._platform

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._platform is None and "app" in scope:
            self._platform = scope["app"].state.platform
        await self._guarded(scope, receive, send)
