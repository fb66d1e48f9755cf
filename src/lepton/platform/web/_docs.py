"""``/docs``: the REST API's operations, who may call each, and a link to the OpenAPI
document, as a page of our own (no script from a CDN on the dashboard's origin: the page
has the dashboard's Content-Security-Policy and loads nothing but our stylesheet)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from lepton.platform._http import PUBLIC, iter_routes, public, rule_of
from lepton.platform.web._render import render

__all__ = ["router"]

router = APIRouter(include_in_schema=False)
_METHODS = ("get", "post", "put", "patch", "delete")


@router.get("/docs")
@public
def docs(request: Request) -> Response:
    """Every operation of the REST API by tag, with the least role it needs."""
    app = request.app
    rules = {(m, p): rule_of(e) for m, p, e in iter_routes(app.routes)}
    groups: dict[str, list[dict[str, Any]]] = {}
    for path, operations in app.openapi().get("paths", {}).items():
        for method in _METHODS:
            operation = operations.get(method)
            if operation is None:
                continue
            rule = rules.get((method.upper(), path))
            described = (operation.get("description") or "").strip().split("\n\n")[0]
            groups.setdefault((operation.get("tags") or ["other"])[0], []).append(
                {
                    "method": method.upper(),
                    "path": path,
                    "who": "anyone" if rule == PUBLIC else (rule or "nobody"),
                    "summary": " ".join(described.split()) or operation.get("summary", ""),
                }
            )
    return render(request, "api_docs.html", groups=groups, title=app.title)
