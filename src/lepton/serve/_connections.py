"""Connection timeouts and limits: the protocol under every Lepton HTTP server.

uvicorn closes a kept-alive connection ``timeout_keep_alive`` seconds after an answer,
but a connection that never sends a request, or stops in the middle of its headers or
of its body, stays open for ever; a few thousand of them exhaust the server. The
protocol here (a subclass of uvicorn's httptools or h11 protocol) keeps, for each
connection, one timer for the phase it is in:

* a new connection must deliver a request's complete headers within
  ``header_timeout_s`` of opening; between requests, one that sends nothing for
  ``idle_timeout_s`` is closed;
* a request's head, from its first byte, must be complete within ``header_timeout_s``
  and at most ``max_header_bytes``, else 408 (or 431) and the connection closes;
* a request body that makes no progress for ``body_timeout_s`` gets 408 (time while
  the app is not reading does not count);
* while the app works on a request, no timer: its own deadlines apply.

And beyond ``max_connections`` open connections, a new one is answered 503 and closed
at once, without touching the open ones. An error answer is followed by a "lingering
close" (stop sending, discard what still comes for a moment) so the client reads it.

:func:`lepton.serve._http_server.server_config` puts it in a ``uvicorn.Config``.
"""

from __future__ import annotations

import abc
import asyncio
import functools
import json
import logging
import time
from dataclasses import dataclass
from typing import Any, ClassVar, cast

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from lepton._wire import error_body
from lepton.errors import ConfigError

__all__ = ["ConnectionLimits", "protocol_class"]

log = logging.getLogger("lepton.serve")

_NEW, _IDLE, _HEADERS, _BODY, _BUSY, _CLOSING = range(6)
_REASONS = {408: b"Request Timeout", 431: b"Request Header Fields Too Large",
            503: b"Service Unavailable"}  # fmt: skip


@dataclass(frozen=True)
class ConnectionLimits:
    """How long a connection may take, and how many may be open at once.

    Attributes:
        header_timeout_s: A request's complete headers must arrive within this.
        body_timeout_s: A request body that makes no progress this long gets 408.
        idle_timeout_s: A connection without a request this long is closed.
        max_connections: Open connections (per process) beyond which new ones get 503.
        max_header_bytes: Larger request headers get 431.
    """

    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    idle_timeout_s: float = 15.0
    max_connections: int = 1024
    max_header_bytes: int = 64 * 1024

    def __post_init__(self) -> None:
        checks = [
            (self.header_timeout_s > 0, "the header timeout must be > 0 s, e.g. 10"),
            (self.body_timeout_s > 0, "the body timeout must be > 0 s, e.g. 30"),
            (self.idle_timeout_s > 0, "the idle timeout must be > 0 s, e.g. 15"),
            (self.max_connections >= 1, "--max-connections must be >= 1, e.g. 1024"),
            (self.max_header_bytes >= 1024, "the header size limit must be >= 1024 bytes"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)


def _error_response(status: int, code: str, message: str, *, retry_after: bool = False) -> bytes:
    body = json.dumps(error_body(code, message)).encode()
    head = [
        b"HTTP/1.1 %d %s" % (status, _REASONS[status]),
        b"content-type: application/json",
        b"content-length: %d" % len(body),
        b"connection: close",
    ]
    if retry_after:
        head.append(b"retry-after: 1")
    return b"\r\n".join(head) + b"\r\n\r\n" + body


class _Guard(asyncio.Protocol):
    """The timers and the connection limit, over either uvicorn protocol (see the module)."""

    limits: ClassVar[ConnectionLimits]
    lingering: ClassVar[int] = 0  # refused connections still closing (per server)
    warned_at: ClassVar[float] = 0.0

    _phase: int = _NEW
    _timer: asyncio.TimerHandle | None = None
    _progress: float = 0.0
    _head_bytes: int = 0
    _counted: bool = False

    # -- what both uvicorn protocols provide (same attribute names in each) ------------

    def _uvicorn(self) -> Any:
        return self  # typed Any: the attributes below come from the uvicorn base class

    def _base_transport(self) -> asyncio.Transport:
        return cast(asyncio.Transport, self._uvicorn().transport)

    def _set_transport(self, transport: asyncio.Transport) -> None:
        self._uvicorn().transport = transport

    def _base_loop(self) -> asyncio.AbstractEventLoop:
        return cast(asyncio.AbstractEventLoop, self._uvicorn().loop)

    def _open_connections(self) -> int:
        return len(self._uvicorn().connections)

    def _cycle(self) -> Any:
        return self._uvicorn().cycle

    def _reading_paused(self) -> bool:
        flow = self._uvicorn().flow
        return flow is not None and bool(flow.read_paused)

    def _stop_keepalive(self) -> None:
        self._uvicorn()._unset_keepalive_if_required()

    @abc.abstractmethod
    def _request_phase(self) -> int:
        """``_HEADERS`` or ``_BODY`` while a request is being received, else ``_IDLE``
        (each parser tells it its own way)."""

    # -- events -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        stream = cast(asyncio.Transport, transport)  # uvloop's is no asyncio.Transport subclass
        if self._open_connections() >= self.limits.max_connections:
            self._refuse(stream)
            return
        super().connection_made(stream)
        self._arm(self.limits.header_timeout_s)

    def data_received(self, data: bytes) -> None:
        if self._phase == _CLOSING:
            return  # an answer was sent and the connection is closing: discard
        super().data_received(data)
        if self._base_transport().is_closing():
            self._cancel()
        else:
            self._sync(len(data))

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel()
        if self._counted:
            self._counted = False
            type(self).lingering -= 1
        super().connection_lost(exc)

    def _after_response(self) -> None:
        if self._phase == _CLOSING or self._base_transport().is_closing():
            return
        self._stop_keepalive()  # the idle timer below replaces uvicorn's keep-alive timer
        self._sync(0)

    # -- phases -----------------------------------------------------------------------

    def _sync(self, received: int) -> None:
        limits = self.limits
        phase = self._request_phase()
        cycle = self._cycle()
        # A request's answer still to come: a next (pipelined) request waits for it, and
        # its headers are timed only from then on.
        pending = cycle is not None and not cycle.response_complete
        if phase == _HEADERS and not pending:
            if self._phase == _NEW:
                self._phase = _HEADERS  # its deadline counts from the connection's opening
                self._head_bytes = received
            elif self._phase != _HEADERS:
                # Only after an idle spell is all of this read a request head.
                self._head_bytes = received if self._phase == _IDLE else 0
                self._enter(_HEADERS, limits.header_timeout_s)
            else:
                self._head_bytes += received
            if self._head_bytes > limits.max_header_bytes:
                self._reject(431, "headers_too_large",
                             f"the request headers are over {limits.max_header_bytes:,} bytes; "
                             f"send smaller headers")  # fmt: skip
        elif phase == _BODY:
            if self._phase != _BODY:
                self._enter(_BODY, limits.body_timeout_s)
            self._progress = self._base_loop().time()
        elif pending:
            if self._phase != _BUSY:
                self._enter(_BUSY, None)
        elif cycle is not None and self._phase != _IDLE:
            self._enter(_IDLE, limits.idle_timeout_s)

    def _enter(self, phase: int, timeout: float | None) -> None:
        self._phase = phase
        self._cancel()
        if timeout is not None:
            self._arm(timeout)

    def _arm(self, delay: float) -> None:
        self._timer = self._base_loop().call_later(delay, self._expire)

    def _cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expire(self) -> None:
        self._timer = None
        transport = self._base_transport()
        if transport.is_closing():
            return
        phase, limits = self._phase, self.limits
        if phase in (_NEW, _IDLE, _CLOSING):
            transport.close()
        elif phase == _HEADERS:
            within = f"{limits.header_timeout_s:g} s"
            self._reject(408, "request_timeout", f"the request headers did not arrive "
                         f"within {within}; send the whole request at once")  # fmt: skip
        elif phase == _BODY:
            now = self._base_loop().time()
            if self._reading_paused():  # the app is not reading: not the client's delay
                self._progress = now
            wait = self._progress + limits.body_timeout_s - now
            if wait > 0:
                self._arm(wait)
                return
            self._reject(408, "request_timeout",
                         f"the request body stalled for {limits.body_timeout_s:g} s; "
                         f"send it without pauses")  # fmt: skip

    # -- ending a connection ----------------------------------------------------------

    def _reject(self, status: int, code: str, message: str) -> None:
        cycle = self._cycle()
        transport = self._base_transport()
        if self._phase == _BODY and cycle is not None:
            if cycle.response_started:  # too late for another answer: just end it
                transport.close()
                return
            cycle.disconnected = True  # the app's receive() ends; what it sends is dropped
            cycle.message_event.set()
        self._linger(transport, _error_response(status, code, message))

    def _linger(self, transport: asyncio.Transport, answer: bytes) -> None:
        # Closing a socket with unread input resets it, and the client may then lose
        # the answer: send it, half-close, and discard input for a moment before closing.
        self._enter(_CLOSING, None)
        transport.write(answer)
        if transport.can_write_eof():
            transport.write_eof()
        self._arm(min(2.0, self.limits.header_timeout_s))

    def _refuse(self, transport: asyncio.Transport) -> None:
        self._set_transport(transport)
        self._phase = _CLOSING
        cls = type(self)
        limit = self.limits.max_connections
        now = time.monotonic()
        if now - cls.warned_at > 10:
            cls.warned_at = now
            log.warning("%d connections are open, the limit (--max-connections); "
                        "refusing new ones", limit)  # fmt: skip
        if cls.lingering >= limit:  # a flood: do not keep even the refused ones open
            transport.close()
            return
        cls.lingering += 1
        self._counted = True
        self._linger(transport, _error_response(
            503, "too_many_connections",
            f"this server has {limit} open connections, its limit; retry shortly",
            retry_after=True))  # fmt: skip


@functools.cache
def _httptools_class() -> type[_Guard] | None:
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:
        return None

    class HttpTools(_Guard, HttpToolsProtocol):
        _parsing: int = _IDLE

        def _request_phase(self) -> int:
            return self._parsing

        def on_message_begin(self) -> None:
            self._parsing = _HEADERS
            super().on_message_begin()

        def on_headers_complete(self) -> None:
            self._parsing = _BODY
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            self._parsing = _IDLE
            super().on_message_complete()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._after_response()

    return HttpTools


class _H11(_Guard, H11Protocol):
    def _request_phase(self) -> int:
        state = self.conn.their_state
        if state is h11.SEND_BODY:
            return _BODY
        if state is h11.IDLE and self.conn.trailing_data[0]:
            return _HEADERS
        return _IDLE

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._after_response()


def protocol_class(parser: str, limits: ConnectionLimits) -> type[asyncio.Protocol]:
    httptools = _httptools_class() if parser in ("auto", "httptools") else None
    if parser == "httptools" and httptools is None:
        raise ConfigError("the httptools parser is not installed; pip install httptools")
    base: type[_Guard] = httptools or _H11
    protocol = type(f"Lepton{base.__name__}Protocol", (base,), {"limits": limits, "lingering": 0})
    return cast("type[asyncio.Protocol]", protocol)
