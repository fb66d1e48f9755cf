"""The platform's shared state: :class:`ServerConfig` (how it runs) and :class:`Platform`
(the database, users, jobs, deployments and the lease that every route and page uses).

Nothing here knows about routes or pages: :mod:`lepton.platform._app` assembles the app
over a :class:`Platform`, and routes reach it through :data:`lepton.platform._deps.P`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from starlette.requests import cookie_parser

from lepton.errors import ConfigError, ForbiddenError
from lepton.platform._auth import Auth, Principal
from lepton.platform._http import SESSION_COOKIE
from lepton.platform._lease import ManagerLease
from lepton.platform.deployments import DeploymentManager
from lepton.platform.jobs import JobManager
from lepton.storage import Database
from lepton.storage.schema import AuditRow

__all__ = ["SAFE_METHODS", "Platform", "ServerConfig", "has_credentials", "session_cookie"]

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
        max_upload_bytes: The largest dataset file ``POST /api/v1/datasets`` (and the
            dashboard's upload form) accepts (413 above it).
        max_anonymous_body_bytes: The largest body of a request without a valid token,
            on the public routes (the others read no body before the caller is known).
        manage: Run the job scheduler and the deployment monitor (off in unit tests that
            need only the API).
        executor: What runs the jobs' workers: ``"local"`` (subprocesses of this
            server) or ``"ray"`` (actors on the Ray cluster at :attr:`ray_address`).
        ray_address: The Ray cluster's ``HOST:PORT`` (``None``: ``RAY_ADDRESS``, else a
            cluster started on this machine); only with ``executor="ray"``.
    """

    host: str = "127.0.0.1"
    port: int = 8000
    allowed_hosts: list[str] = field(default_factory=list)
    max_body_bytes: int = 256 * 1024 * 1024
    max_anonymous_body_bytes: int = 64 * 1024
    max_upload_bytes: int = 64 * 1024 * 1024
    manage: bool = True
    executor: str = "local"
    ray_address: str | None = None

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
        self.jobs = _job_manager(db, home, config)
        self.deployments = DeploymentManager(db, home)
        self.deployments.aiops.submit_job = self._retrain
        self.lease = ManagerLease(db, config.url, on_lost=self._stop_managing)
        self.started_at = time.time()

    def _retrain(self, spec: dict[str, Any]) -> int:
        """An alert rule's ``retrain`` action: queue its job spec as user ``aiops``."""
        from lepton.platform.jobs._specs import JobRequest

        job = self.jobs.submit(JobRequest.model_validate({"spec": spec}), "aiops")
        self.audit("aiops", "POST /jobs", f"/api/v1/jobs/{job.id}", 201, {"retrain": spec})
        return job.id

    def authenticate(self, headers: Mapping[str, str], method: str) -> Principal | None:
        """The caller, from a bearer token or the dashboard session cookie: from the
        request's headers only, so nothing else of a request is read before its caller is
        known. It queries the database: call it off the event loop.

        Args:
            headers: The request's headers, by lowercase name.
            method: The request's method.

        Raises:
            ForbiddenError: A session cookie with a state-changing request whose ``Origin``
                (or ``Referer``) is not this server.
        """
        scheme, _, secret = headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and secret:
            return self.auth.authenticate(secret.strip(), "api")
        cookie = session_cookie(headers)
        if cookie:
            principal = self.auth.authenticate(cookie, "session")
            if principal is not None and method not in SAFE_METHODS:
                _check_origin(headers)
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
            self.deployments.shutdown()
            self.lease.release()

    def _stop_managing(self) -> None:  # the lease was taken over: the API keeps serving
        self.jobs.stop()
        self.deployments.stop_monitor()

    def audit(self, actor: str, action: str, target: str, status: int, detail: Any) -> int:
        """Append one entry to the audit log; returns its id."""
        with self.db.session() as s:
            row = AuditRow(
                at=time.time(),
                actor=actor[:64],
                action=action[:100],
                target=target[:500],
                status=status,
                detail=detail,
            )
            s.add(row)
            s.flush()
            return row.id

    def recount_audit(self, entry_id: int, count: int) -> None:
        """Set the ``count`` in an aggregated audit entry's detail (refused anonymous
        requests share one entry per client and action a minute)."""
        with self.db.session() as s:
            row = s.get(AuditRow, entry_id)
            if row is not None:
                row.detail = {**(row.detail or {}), "count": count}


def _job_manager(db: Database, home: Path, config: ServerConfig) -> JobManager:
    """The scheduler over the executor ``config`` names; a Ray one is connected now, so
    that a wrong address stops the server at its start, and gives the cluster's size."""
    if config.executor == "local":
        return JobManager(db, home)
    if config.executor == "ray":
        from lepton.platform.jobs._ray import RayExecutor

        executor = RayExecutor(config.ray_address)
        return JobManager(db, home, executor, executor.capacity())
    raise ConfigError(f"--executor must be local or ray, got {config.executor!r}")


def has_credentials(headers: Mapping[str, str]) -> bool:
    """Whether a request carries a bearer token or a session cookie (without checking it)."""
    return bool(headers.get("authorization")) or bool(session_cookie(headers))


def session_cookie(headers: Mapping[str, str]) -> str:
    """The dashboard session cookie's value ("" for none)."""
    return cookie_parser(headers.get("cookie", "")).get(SESSION_COOKIE, "")


def _check_origin(headers: Mapping[str, str]) -> None:
    origin = headers.get("origin") or headers.get("referer")
    expected = headers.get("host", "")
    if not origin or urlsplit(origin).netloc != expected:
        raise ForbiddenError(
            "cross-site request refused: a state-changing dashboard request must come from "
            "this server's own pages"
        )
