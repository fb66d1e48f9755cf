"""The platform server's FastAPI app: the REST API under ``/api/v1`` and the dashboard,
assembled over a :class:`~lepton.platform._state.Platform`, behind the guards of
:mod:`lepton.platform._guards`."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from fastapi import Depends, FastAPI

from lepton._version import __version__
from lepton.platform import api, web
from lepton.platform._guards import Guard
from lepton.platform._http import authorize, check_rules, install_error_handlers, public
from lepton.platform._state import Platform, ServerConfig
from lepton.platform.web import _docs as web_docs

__all__ = ["Platform", "ServerConfig", "create_app"]


def create_app(platform: Platform) -> FastAPI:
    """The FastAPI app over ``platform``: the REST API under ``/api/v1`` and the dashboard.

    Args:
        platform: The shared state; :meth:`Platform.start` runs when the app starts.
    """

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
        version=__version__,
        description="Datasets, runs, models, jobs, deployments, users and the audit log. "
        "Every route needs `Authorization: Bearer <token>` unless marked public.",
        lifespan=lifespan,
        dependencies=[Depends(authorize)],
        # our own /docs page instead of Swagger UI, whose script would come from a CDN
        docs_url=None,
        openapi_url="/openapi.json",
        redoc_url=None,
    )
    app.state.platform = platform
    install_error_handlers(app)
    api.install(app)
    web.install(app)
    app.include_router(web_docs.router)
    _mark_openapi_public(app)
    check_rules(app.routes)
    app.add_middleware(Guard)
    return app


def _mark_openapi_public(app: FastAPI) -> None:
    for route in app.routes:
        if getattr(route, "path", None) == "/openapi.json":
            public(route.endpoint)  # type: ignore[attr-defined]
