"""Every deployment route the API forwards is one the proxy will forward (a route missing
from ``ROUTES`` answers 500 at its first call), the streamed ones are streamed, and the
route each special service answers on is forwarded."""

from __future__ import annotations

from typing import Any

from lepton.platform._http import iter_routes
from lepton.platform.deployments._proxy import ROUTES, STREAMED
from lepton.serve._by_model import SERVICES

# POSTs that act on the deployment, not forwarded (canary/promote: the last part)
LIFECYCLE = {"stop", "start", "release", "canary", "promote"}


def test_every_forwarded_route_is_known_to_the_proxy(app: Any) -> None:
    forwarded = {
        path.rsplit("/", 1)[1]
        for method, path, _ in iter_routes(app.routes)
        if method == "POST" and path.startswith("/api/v1/deployments/{name}/")
    } - LIFECYCLE
    assert forwarded == set(ROUTES)
    assert set(STREAMED) <= forwarded
    # the route the dashboard names for a version with a service of its own is one of them
    assert {served.route.lstrip("/") for served in SERVICES.values()} <= forwarded
