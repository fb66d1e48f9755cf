"""The platform server's FastAPI app: its state, its guards, and its lifecycle.

Guards, outermost first:

1. ``Host`` must name this server (127.0.0.1/localhost/[::1] on its port, or an
   ``allowed_hosts`` entry): a page on another site cannot reach it by DNS rebinding;
2. request bodies over ``max_body_bytes`` get 413, whether announced or streamed;
3. :func:`~lepton.server._http.authorize` (every route: deny by default, then roles);
   a state-changing request authenticated by the dashboard cookie must also carry an
   ``Origin`` (or ``Referer``) of this server, so another site cannot forge it;
4. every state-changing request is written to the audit log, refused ones included.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse

import lepton
from lepton.errors import ForbiddenError
from lepton.server._auth import Auth, Principal
from lepton.server._http import (
    SESSION_COOKIE,
    audited,
    authorize,
    check_rules,
    error_body,
    install_error_handlers,
)
from lepton.server._lease import ManagerLease
from lepton.storage import Database
from lepton.storage._schema import AuditEntry

__all__ = ["Platform", "ServerConfig", "create_app"]

log = logging.getLogger("lepton.server")
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass
class ServerConfig:
    """How a platform server runs (``lepton server --help`` sets these).

    Attributes:
        host: The address to bind (loopback by default).
        port: The port to bind.
        allowed_hosts: Extra ``Host`` values to accept (``name`` or ``name:port``), for a
            server reached through a proxy or by a DNS name.
        max_body_bytes: The largest request body accepted (413 above it).
        manage: Run the job scheduler and the deployment monitor (off in unit tests that
            need only the API).
    """

    host: str = "127.0.0.1"
    port: int = 8000
    allowed_hosts: list[str] = field(default_factory=list)
    max_body_bytes: int = 256 * 1024 * 1024
    manage: bool = True

    @property
    def url(self) -> str:
        """Where this server is reached from this machine."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        return f"http://{'[' + host + ']' if ':' in host else host}:{self.port}"

    def host_ok(self, header: str) -> bool:
        """Whether a request's ``Host`` header names this server."""
        name, _, port = header.rpartition(":") if not header.endswith("]") else (header, "", "")
        if not name:
            name, port = header, ""
        if header in self.allowed_hosts or name in self.allowed_hosts:
            return True
        local = {"127.0.0.1", "localhost", "[::1]", self.host}
        return name in local and port in ("", str(self.port))


class Platform:
    """Everything the routes share: the database, users, jobs and deployments.

    Args:
        db: The metadata database.
        home: ``LEPTON_HOME`` (job folders, deployment folders, the admin token).
        config: The server's settings.
    """

    def __init__(self, db: Database, home: Path, config: ServerConfig) -> None:
        from lepton.server._deployments import DeploymentManager
        from lepton.server._jobs import JobManager

        self.db, self.home, self.config = db, home, config
        self.auth = Auth(db)
        self.jobs = JobManager(db, home)
        self.deployments = DeploymentManager(db, home)
        self.lease = ManagerLease(db, config.url, on_lost=self._stop_managing)
        self.started_at = time.time()

    def authenticate(self, request: Request) -> Principal | None:
        """The caller, from a bearer token or the dashboard session cookie."""
        header = request.headers.get("authorization", "")
        scheme, _, secret = header.partition(" ")
        if scheme.lower() == "bearer" and secret:
            return self.auth.authenticate(secret.strip(), "api")
        cookie = request.cookies.get(SESSION_COOKIE)
        if cookie:
            principal = self.auth.authenticate(cookie, "session")
            if principal is not None and request.method not in SAFE_METHODS:
                _check_origin(request)
            return principal
        return None

    def start(self) -> None:
        """Recover what a previous server left, then start the scheduler and monitor."""
        from lepton.registry import reconcile_versions
        from lepton.tracking import reconcile

        if self.config.manage:  # before any recovery: another server may be managing
            self.lease.acquire()
        reconcile(self.db)
        reconcile_versions(self.db)
        if self.config.manage:
            self.jobs.recover()
            self.jobs.start()
            self.deployments.recover()
            self.deployments.start_monitor()

    def stop(self) -> None:
        """Stop the scheduler and monitor; jobs and deployments keep running, to be
        adopted by the next server."""
        if self.config.manage:
            self.jobs.stop()
            self.deployments.shutdown(stop_deployments=False)
            self.lease.release()

    def _stop_managing(self) -> None:  # the lease was taken over: the API keeps serving
        self.jobs.stop()
        self.deployments.stop_monitor()

    def audit(self, actor: str, action: str, target: str, status: int, detail: Any) -> None:
        """Append one entry to the audit log."""
        with self.db.session() as s:
            s.add(
                AuditEntry(
                    at=time.time(),
                    actor=actor[:64],
                    action=action[:100],
                    target=target[:500],
                    status=status,
                    detail=detail,
                )
            )


def _check_origin(request: Request) -> None:
    origin = request.headers.get("origin") or request.headers.get("referer")
    expected = request.headers.get("host", "")
    if not origin or urlsplit(origin).netloc != expected:
        raise ForbiddenError(
            "cross-site request refused: a state-changing dashboard request must come from "
            "this server's own pages"
        )


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


def create_app(platform: Platform) -> FastAPI:
    """The FastAPI app over ``platform``: the REST API under ``/api/v1`` and the dashboard.

    Args:
        platform: The shared state; :meth:`Platform.start` runs when the app starts.
    """
    from lepton.server import _api_jobs, _api_models, _api_users, _dashboard

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        platform.start()
        try:
            yield
        finally:
            platform.stop()
            await platform.deployments.aclose()

    app = FastAPI(
        title="Lepton platform",
        version=lepton.__version__,
        description="Datasets, runs, models, jobs, deployments, users and the audit log. "
        "Every route needs `Authorization: Bearer <token>` unless marked public.",
        lifespan=lifespan,
        dependencies=[Depends(authorize)],
        docs_url="/docs",
        openapi_url="/openapi.json",
        redoc_url=None,
    )
    app.state.platform = platform
    install_error_handlers(app)
    for module in (_api_models, _api_jobs, _api_users):
        app.include_router(module.router)
    app.include_router(_api_users.login_router)
    _dashboard.install(app)
    _mark_docs_public(app)
    check_rules(app.routes)
    app.add_middleware(_Guard)
    return app


def _mark_docs_public(app: FastAPI) -> None:
    from lepton.server._http import public

    for route in app.routes:
        if getattr(route, "path", None) in ("/docs", "/openapi.json", "/docs/oauth2-redirect"):
            public(route.endpoint)  # type: ignore[attr-defined]


class _Guard:
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


def json_error(status: int, code: str, message: str) -> JSONResponse:
    """An error answer outside a route (used by the dashboard's redirects)."""
    return JSONResponse(error_body(code, message), status)
