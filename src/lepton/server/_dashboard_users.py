"""Dashboard pages for admins: users, their roles and their API tokens.

A new token's secret is rendered once, on the page that answers the form that made it
(pages are ``Cache-Control: no-store``); the server keeps only its hash.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import Response

from lepton.errors import PlatformError
from lepton.server._api_models import Caller, P
from lepton.server._http import RecordId, allow
from lepton.server._web import FormText, optional_int, redirect, render

__all__ = ["router"]

router = APIRouter(include_in_schema=False)


# -- users and tokens ---------------------------------------------------------------------
@router.get("/users")
@allow("admin")
def users(p: P, request: Request) -> Response:
    """Every user, and the form that adds one."""
    found, total = p.auth.list_users(0, 500)
    return render(request, "users.html", section="/users", users=found, total=total)


@router.post("/users")
@allow("admin")
def create_user(
    p: P,
    name: FormText,
    role: Annotated[str, Form(pattern="^(viewer|editor|admin)$")] = "viewer",
) -> Response:
    """Add a user."""
    user = p.auth.create_user(name.strip(), role)  # type: ignore[arg-type]
    return redirect(f"/users/{user.id}")


def _user_page(
    p: Any, request: Request, user_id: int, *, secret: str = "", token_name: str = ""
) -> Response:
    user = p.auth.get_user(user_id)
    tokens, _ = p.auth.list_tokens(user_id, 0, 500)
    return render(
        request,
        "user.html",
        section="/users",
        user=user,
        tokens=tokens,
        secret=secret,
        token_name=token_name,
    )


@router.get("/users/{user_id}")
@allow("admin")
def user(p: P, request: Request, user_id: RecordId) -> Response:
    """A user: role, state, API tokens (never their secrets)."""
    return _user_page(p, request, user_id)


@router.post("/users/{user_id}")
@allow("admin")
def change_user(
    p: P,
    who: Caller,
    user_id: RecordId,
    role: Annotated[str | None, Form(pattern="^(viewer|editor|admin)$")] = None,
    active: Annotated[str | None, Form(pattern="^(yes|no)$")] = None,
) -> Response:
    """Change a user's role, or (de)activate it."""
    from lepton.server._auth import UserChange

    change = UserChange(role=role, active=None if active is None else active == "yes")  # type: ignore[arg-type]
    p.auth.change_user(user_id, change, who)
    return redirect(f"/users/{user_id}")


@router.post("/users/{user_id}/tokens")
@allow("admin")
def create_token(
    p: P,
    request: Request,
    user_id: RecordId,
    name: Annotated[str, Form(min_length=1, max_length=100)],
    expires_in_days: FormText = "",
) -> Response:
    """Create an API token; its secret is on this answer's page only (never stored)."""
    days = optional_int(expires_in_days, "expires in days")
    if days is not None and not 1 <= days <= 3650:
        raise PlatformError(f"expires in days must be 1 to 3650, got {days}")
    _, secret = p.auth.create_token(user_id, name.strip(), ttl_s=days * 86400.0 if days else None)
    return _user_page(p, request, user_id, secret=secret, token_name=name.strip())


@router.post("/tokens/{token_id}/revoke")
@allow("admin")
def revoke_token(p: P, token_id: RecordId) -> Response:
    """Revoke a token at once."""
    token = p.auth.revoke(token_id)
    return redirect(f"/users/{token.user_id}")
