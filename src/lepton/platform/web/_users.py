"""Dashboard pages: users and their roles (admins), API tokens (everyone their own).

A new token's secret is shown once: the form's answer redirects (303, so a reload does
not post again) to the user's page with a one-time key, which shows the secret to the
one who made it, within a minute, once; the server keeps only the token's hash after.
Pages are ``Cache-Control: no-store``.
"""

from __future__ import annotations

import secrets
import threading
import time
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import Response

from lepton.errors import PlatformError
from lepton.platform._audit import audit_entries
from lepton.platform._auth import own_or_admin
from lepton.platform._deps import Caller, P
from lepton.platform._http import RecordId, allow
from lepton.platform.web._render import PER_PAGE, FormText, optional_int, redirect, render

__all__ = ["router"]

router = APIRouter(include_in_schema=False)

_SHOW_S = 60.0  # how long a new token's secret waits to be shown


class _Shown:
    """New tokens' secrets on their way to the page that shows them, once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting: dict[str, tuple[float, int, str, str]] = {}

    def put(self, viewer: int, name: str, secret: str) -> str:
        key = secrets.token_urlsafe(16)
        with self._lock:
            now = time.monotonic()
            self._waiting = {k: v for k, v in self._waiting.items() if v[0] > now}
            self._waiting[key] = (now + _SHOW_S, viewer, name, secret)
        return key

    def take(self, key: str, viewer: int) -> tuple[str, str]:
        """``(name, secret)``, or empty strings: shown already, too late, or not yours."""
        with self._lock:
            found = self._waiting.get(key)
            if found is None or found[1] != viewer:
                return "", ""
            del self._waiting[key]
        return ("", "") if found[0] < time.monotonic() else (found[2], found[3])


_SHOWN = _Shown()


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
@allow("viewer")
def user(
    p: P,
    who: Caller,
    request: Request,
    user_id: RecordId,
    new: Annotated[str, Query(max_length=64)] = "",
) -> Response:
    """A user: role, state, API tokens (never their secrets). Yours, or any for an admin."""
    own_or_admin(who, user_id)
    token_name, secret = _SHOWN.take(new, who.user_id) if new else ("", "")
    return _user_page(p, request, user_id, secret=secret, token_name=token_name)


@router.post("/users/{user_id}")
@allow("admin")
def change_user(
    p: P,
    who: Caller,
    user_id: RecordId,
    role: Annotated[str | None, Form(pattern="^(viewer|editor|admin)$")] = None,
    active: Annotated[str | None, Form(pattern="^(yes|no)$")] = None,
) -> Response:
    """Change a user's role, or (de)activate it (which revokes all of its tokens and
    sessions for good)."""
    from lepton.platform._auth import UserChange

    change = UserChange(role=role, active=None if active is None else active == "yes")  # type: ignore[arg-type]
    p.auth.change_user(user_id, change, who)
    return redirect(f"/users/{user_id}")


@router.post("/users/{user_id}/tokens")
@allow("viewer")
def create_token(
    p: P,
    who: Caller,
    user_id: RecordId,
    name: Annotated[str, Form(min_length=1, max_length=100)],
    expires_in_days: FormText = "",
) -> Response:
    """Create an API token (yours, or anyone's for an admin); show its secret once."""
    own_or_admin(who, user_id)
    days = optional_int(expires_in_days, "expires in days")
    if days is not None and not 1 <= days <= 3650:
        raise PlatformError(f"expires in days must be 1 to 3650, got {days}")
    _, secret = p.auth.create_token(user_id, name.strip(), ttl_s=days * 86400.0 if days else None)
    return redirect(f"/users/{user_id}?new={_SHOWN.put(who.user_id, name.strip(), secret)}")


@router.post("/tokens/{token_id}/revoke")
@allow("viewer")
def revoke_token(p: P, who: Caller, token_id: RecordId) -> Response:
    """Revoke a token at once (yours, or anyone's for an admin; another user's token is
    not found, like one that does not exist)."""
    token = p.auth.revoke(token_id, by=who)
    return redirect(f"/users/{token.user_id}")


# -- the audit log ------------------------------------------------------------------------
@router.get("/audit")
@allow("admin")
def audit(
    p: P,
    request: Request,
    actor: Annotated[str, Query(max_length=64)] = "",
    refused: Annotated[bool, Query()] = False,
    offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
) -> Response:
    """Every change made through the server, newest first; by user, or only the refused."""
    entries, total = audit_entries(p.db, offset, PER_PAGE, actor=actor or None, refused=refused)
    users, _ = p.auth.list_users(0, 500)
    query = {**({"actor": actor} if actor else {}), **({"refused": "true"} if refused else {})}
    extra = "&" + urlencode(query) if query else ""
    return render(
        request, "audit.html", section="/audit", entries=entries, total=total, offset=offset,
        per_page=PER_PAGE, actor=actor, refused=refused, users=users, extra=extra,
    )  # fmt: skip
