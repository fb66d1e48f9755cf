"""The web dashboard: server-rendered pages by noun (overview, datasets, runs, studies,
models, jobs, deployments; users and the audit log), their templates, charts, Markdown and
static files. Pages call the SDK or the platform's services, never a database table or the
API's routes.

Every form is a plain ``method=post`` form, which browsers send with an ``Origin`` header
that :meth:`~lepton.platform._state.Platform.authenticate` checks against this server.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

__all__ = ["install"]

_API_DOCS = frozenset({"/docs", "/openapi.json", "/docs/oauth2-redirect"})


def install(app: FastAPI) -> None:
    """Mount the dashboard's pages and static files on ``app``.

    Call it after the app's error handlers and the API's routers are installed: it wraps
    the handlers so that errors on every route outside ``/api/`` (the pages, and the login
    link the API's router serves) become pages, while the API keeps its JSON errors.
    """
    from lepton.platform._http import iter_routes
    from lepton.platform.web import (
        _alerts,
        _compare,
        _datasets,
        _deployments,
        _explain,
        _federated,
        _gallery,
        _graph,
        _jobs,
        _models,
        _overview,
        _privacy,
        _recommend,
        _runs,
        _site,
        _studies,
        _text,
        _users,
        _vision,
    )
    from lepton.platform.web._render import errors_as_pages

    # _compare before _models: /models/{name}/compare is not a version number
    routers = (_site, _overview, _datasets, _privacy, _runs, _studies, _compare, _explain,
               _federated, _recommend, _graph, _models, _jobs, _deployments, _alerts, _users,
               _vision, _text, _gallery)  # fmt: skip
    for module in routers:
        app.include_router(module.router)
    pages: set[Any] = {
        endpoint
        for _, path, endpoint in iter_routes(app.routes)
        if not path.startswith("/api/") and path not in _API_DOCS
    }
    errors_as_pages(app, pages)
