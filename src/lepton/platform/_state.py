"""The platform's shared state: :class:`ServerConfig` (how it runs) and :class:`Platform`
(the database, users, jobs, deployments and the lease that every route and page uses).

Nothing here knows about routes or pages: :mod:`lepton.platform._app` assembles the app
over a :class:`Platform`, and routes reach it through :data:`lepton.platform._deps.P`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fastapi import Request

from lepton.errors import ForbiddenError
from lepton.platform._auth import Auth, Principal
from lepton.platform._http import SESSION_COOKIE
from lepton.platform._lease import ManagerLease
from lepton.platform.deployments import DeploymentManager
from lepton.platform.jobs import JobManager
from lepton.storage import Database
from lepton.storage.schema import AuditRow

__all__ = ["SAFE_METHODS", "Platform", "ServerConfig"]

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
                AuditRow(
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
