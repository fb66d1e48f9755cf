"""A Python client of the platform's REST API, which finds the local server by itself."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import httpx

from lepton._wire import error_from_answer
from lepton.config import get_settings
from lepton.errors import PlatformError, UnauthorizedError
from lepton.platform._auth import admin_token_path

__all__ = ["PlatformClient"]

ENDED = ("succeeded", "failed", "cancelled", "lost")


class PlatformClient:
    """Talk to a ``lepton server``.

    Args:
        url: The server (default: ``LEPTON_SERVER_URL``, else ``http://127.0.0.1:8000``).
        token: An API token (default: ``LEPTON_TOKEN``, else the local admin token in
            ``LEPTON_HOME/admin-token`` that the server wrote at its first start).
        timeout_s: Seconds to wait for each answer.

    Example:
        >>> client = PlatformClient()  # doctest: +SKIP
        >>> job = client.submit_job({"kind": "train", "data": "mnist"})  # doctest: +SKIP
        >>> client.wait_job(job["id"])["state"]  # doctest: +SKIP
        'succeeded'
    """

    def __init__(
        self, url: str | None = None, token: str | None = None, *, timeout_s: float = 30.0
    ) -> None:
        self.url = (url or os.environ.get("LEPTON_SERVER_URL") or "http://127.0.0.1:8000").rstrip(
            "/"
        )
        self._token = token or os.environ.get("LEPTON_TOKEN")
        self._http = httpx.Client(base_url=self.url, timeout=timeout_s)

    def _auth(self) -> dict[str, str]:
        token = self._token or _local_token()  # read late: a new server writes it at start
        if not token:
            raise UnauthorizedError(
                "no API token: pass token=, set LEPTON_TOKEN, or start `lepton server` once on "
                "this machine so that it writes LEPTON_HOME/admin-token"
            )
        return {"Authorization": f"Bearer {token}"}

    def wait_ready(self, timeout_s: float = 120.0) -> None:
        """Wait until the server answers (e.g. right after starting it)."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if self._http.get("/api/v1/health").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise PlatformError(f"no Lepton server answered at {self.url} in {timeout_s:.0f} s")
            time.sleep(0.2)

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> PlatformClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """One API call (``path`` under ``/api/v1``); returns the decoded JSON answer.

        Raises:
            UnauthorizedError, ForbiddenError, NotFoundError, ConflictError, PlatformError:
                The server's error, with its message.
        """
        try:
            headers = {**kwargs.pop("headers", {}), **self._auth()}
            response = self._http.request(
                method, f"/api/v1/{path.lstrip('/')}", headers=headers, **kwargs
            )
        except httpx.TransportError as exc:
            raise PlatformError(
                f"cannot reach the Lepton server at {self.url} ({exc}); start it with "
                f"`lepton server` or set LEPTON_SERVER_URL"
            ) from None
        if response.status_code >= 400:
            raise error_from_answer(
                response.status_code, response.text, answered_by=PlatformError,
                reason=response.reason_phrase,
            )  # fmt: skip
        return response.json() if response.content else None

    # -- conveniences ---------------------------------------------------------------------
    def submit_job(self, spec: dict[str, Any], **options: Any) -> dict[str, Any]:
        """Queue a job (``spec`` has a ``kind``; ``options``: priority, cpus, max_retries...)."""
        job: dict[str, Any] = self.request("POST", "jobs", json={"spec": spec, **options})
        return job

    def wait_job(self, job_id: int, timeout_s: float = 3600.0) -> dict[str, Any]:
        """Poll a job until it ends; returns its final record."""
        deadline = time.monotonic() + timeout_s
        while True:
            job: dict[str, Any] = self.request("GET", f"jobs/{job_id}")
            if job["state"] in ENDED:
                return job
            if time.monotonic() > deadline:
                raise PlatformError(f"job {job_id} still {job['state']} after {timeout_s:.0f} s")
            time.sleep(0.5)

    def wait_deployment(self, name: str, timeout_s: float = 120.0) -> dict[str, Any]:
        """Poll a deployment until it is ready to serve; returns its record."""
        deadline = time.monotonic() + timeout_s
        while True:
            found: dict[str, Any] = self.request("GET", f"deployments/{name}")
            if found["state"] == "ready":
                return found
            if found["state"] == "failed" or time.monotonic() > deadline:
                raise PlatformError(
                    f"deployment {name!r} is {found['state']}: {found.get('error') or 'not ready'}"
                )
            time.sleep(0.3)

    def predict(self, deployment: str, inputs: Any) -> dict[str, Any]:
        """A prediction from a deployment, through the server."""
        answer: dict[str, Any] = self.request(
            "POST", f"deployments/{deployment}/predict", json={"inputs": inputs}
        )
        return answer


def _local_token() -> str | None:
    path: Path = admin_token_path(get_settings().home)
    try:
        return path.read_text().strip() or None
    except OSError:
        return None
