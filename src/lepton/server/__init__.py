"""The platform server (``lepton server``): REST API, jobs, deployments, users, dashboard.

Example:
    >>> from lepton.server import PlatformClient
    >>> client = PlatformClient()  # the local server and its admin token  # doctest: +SKIP
    >>> client.request("GET", "me")["role"]  # doctest: +SKIP
    'admin'
"""

from lepton.server._client import PlatformClient

__all__ = ["PlatformClient"]
