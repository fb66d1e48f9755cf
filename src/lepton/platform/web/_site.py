"""What every dashboard page leans on from the server: our static files (a fixed list)
and the sign-in help page a visitor without a session is sent to."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from lepton.platform._http import public
from lepton.platform.web._render import STATIC, render

__all__ = ["router"]

router = APIRouter(include_in_schema=False)
_STATIC_FILES = {
    "lepton.css": "text/css",
    "lepton.js": "text/javascript",
    "favicon.svg": "image/svg+xml",
}


@router.get("/login-help")
@public
def login_help(request: Request) -> Response:
    """How to sign in: the one-time link the server prints, or ``--login-link``."""
    return render(request, "login_help.html", reason="")


@router.get("/static/{name}")
@public
def static(name: Annotated[str, Path(max_length=40)]) -> Response:
    """Our stylesheet and script (a fixed list: no path from the URL reaches the disk)."""
    media_type = _STATIC_FILES.get(name)
    if media_type is None:
        raise StarletteHTTPException(404, f"no static file {name!r}")
    return Response(
        (STATIC / name).read_bytes(),
        media_type=media_type,
        headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"},
    )
