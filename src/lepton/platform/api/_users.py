"""``/api/v1``: the caller, users, API tokens, the audit log; the dashboard login link."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import BaseModel, Field

from lepton.errors import UnauthorizedError
from lepton.platform._audit import AuditView, audit_entries
from lepton.platform._auth import (
    SESSION_TTL_S,
    ChangedUser,
    NewToken,
    NewUser,
    TokenView,
    UserChange,
    UserView,
    own_or_admin,
)
from lepton.platform._deps import Caller, P
from lepton.platform._http import SESSION_COOKIE, Page, PageQuery, RecordId, allow, public

__all__ = ["login_router", "router"]

router = APIRouter(prefix="/api/v1")


class Me(BaseModel):
    id: int
    name: str
    role: str
    via: str


@router.get("/me", tags=["users"])
@allow("viewer")
def me(who: Caller) -> Me:
    """Who the token belongs to, and its role."""
    return Me(id=who.user_id, name=who.name, role=who.role, via=who.via)


@router.get("/users", tags=["users"])
@allow("admin")
def users(p: P, paging: PageQuery) -> Page[UserView]:
    """Every user."""
    return Page.of(p.auth.list_users(paging.offset, paging.limit), paging)


@router.post("/users", tags=["users"], status_code=201)
@allow("admin")
def create_user(p: P, body: NewUser) -> UserView:
    """Add a user (roles: viewer reads, editor also changes, admin also manages users)."""
    return p.auth.create_user(body.name, body.role)


@router.get("/users/{user_id}", tags=["users"])
@allow("admin")
def user(p: P, user_id: RecordId) -> UserView:
    """One user."""
    return p.auth.get_user(user_id)


@router.patch("/users/{user_id}", tags=["users"])
@allow("admin")
def change_user(p: P, who: Caller, user_id: RecordId, body: UserChange) -> ChangedUser:
    """Change a user's role, or (de)activate it.

    Deactivating revokes every API token, login link and dashboard session of the user at
    once and for good (``tokens_revoked`` in the answer says how many): reactivating the
    user brings none of them back, so give the user new tokens then.
    """
    return p.auth.change_user(user_id, body, who)


@router.get("/users/{user_id}/tokens", tags=["tokens"])
@allow("viewer")
def tokens(p: P, who: Caller, user_id: RecordId, paging: PageQuery) -> Page[TokenView]:
    """A user's API tokens (never their secrets). Yours, or anyone's for an admin."""
    own_or_admin(who, user_id)
    p.auth.get_user(user_id)
    return Page.of(p.auth.list_tokens(user_id, paging.offset, paging.limit), paging)


class CreatedToken(BaseModel):
    token: TokenView
    secret: str = Field(description="Shown once: store it now; only its hash is kept.")


@router.post("/users/{user_id}/tokens", tags=["tokens"], status_code=201)
@allow("viewer")
def create_token(p: P, who: Caller, user_id: RecordId, body: NewToken) -> CreatedToken:
    """Create an API token. Its secret is in this answer only."""
    own_or_admin(who, user_id)
    ttl = body.expires_in_days * 86400.0 if body.expires_in_days else None
    view, secret = p.auth.create_token(user_id, body.name, ttl_s=ttl)
    return CreatedToken(token=view, secret=secret)


@router.delete("/tokens/{token_id}", tags=["tokens"])
@allow("viewer")
def revoke_token(p: P, who: Caller, token_id: RecordId) -> TokenView:
    """Revoke a token at once. Yours, or anyone's for an admin (another user's token is
    not found, exactly like one that does not exist)."""
    return p.auth.revoke(token_id, by=who)


@router.get("/audit", tags=["audit"])
@allow("admin")
def audit(
    p: P,
    paging: PageQuery,
    actor: Annotated[str | None, Query(max_length=64)] = None,
    refused: Annotated[bool, Query(description="Only refused requests (status >= 400).")] = False,
) -> Page[AuditView]:
    """Every change made through the server, newest first: who, what, when, and its status."""
    found = audit_entries(p.db, paging.offset, paging.limit, actor=actor, refused=refused)
    return Page.of(found, paging)


# -- dashboard sign-in (outside /api/v1: mounted at the root by the app) ------------------
login_router = APIRouter()


@login_router.get("/login", include_in_schema=False)
@public
def login(p: P, request: Request, token: Annotated[str, Query(max_length=200)]) -> Response:
    """Exchange a one-time login link for a dashboard session cookie."""
    principal = p.auth.authenticate(token, "login")
    if principal is None:
        raise UnauthorizedError(
            "this login link is used, expired or wrong; get a new one with "
            "`lepton server --login-link`"
        )
    _, session = p.auth.create_token(
        principal.user_id, "dashboard session", kind="session", ttl_s=SESSION_TTL_S
    )
    response = RedirectResponse("/", status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        session,
        max_age=int(SESSION_TTL_S),
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


@login_router.post("/logout", include_in_schema=False)
@allow("viewer")
def logout(p: P, request: Request) -> Response:
    """End the dashboard session."""
    principal = request.state.principal
    if principal.via == "cookie":
        p.auth.revoke(principal.token_id)
    response = RedirectResponse("/login-help", status_code=303)
    response.delete_cookie(SESSION_COOKIE)
    return response
