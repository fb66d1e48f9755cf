"""The platform server (``lepton server``): REST API, jobs, deployments, users, dashboard.

Example:
    >>> from lepton.platform import PlatformClient
    >>> client = PlatformClient()  # the local server and its admin token  # doctest: +SKIP
    >>> client.request("GET", "me")["role"]  # doctest: +SKIP
    'admin'
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lepton.platform._client import PlatformClient

__all__ = ["PlatformClient"]


def __getattr__(name: str) -> Any:
    # Lazy, so that a job's worker (lepton.platform.jobs._worker) does not pay for httpx at start.
    if name == "PlatformClient":
        from lepton.platform._client import PlatformClient

        return PlatformClient
    raise AttributeError(f"module 'lepton.platform' has no attribute {name!r}")
