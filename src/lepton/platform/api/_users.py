"""``/api/v1``: the caller, users, API tokens, the audit log; the dashboard login link."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import func, select

from lepton.errors import ForbiddenError, UnauthorizedError
from lepton.platform._auth import SESSION_TTL_S, NewToken, NewUser, TokenView, UserChange, UserView
from lepton.platform._deps import Caller, P
from lepton.platform._http import SESSION_COOKIE, Page, PageQuery, RecordId, allow, public
from lepton.storage.schema import AuditRow

__all__ = ["AuditView", "audit_entries", "login_router", "own_or_admin", "router"]

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
def change_user(p: P, who: Caller, user_id: RecordId, body: UserChange) -> UserView:
    """Change a user's role, or (de)activate it; a deactivated user's tokens stop working."""
    return p.auth.change_user(user_id, body, who)


def own_or_admin(who: Any, user_id: int) -> None:
    """Refuse (403) unless ``who`` is user ``user_id`` or an admin."""
    if who.user_id != user_id and not who.may("admin"):
        raise ForbiddenError("you may manage only your own tokens; an admin may manage any")


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
    """Revoke a token at once. Yours, or anyone's for an admin."""
    own_or_admin(who, p.auth.get_token(token_id).user_id)
    return p.auth.revoke(token_id)


class AuditView(BaseModel):
    model_config = ConfigDict(from_attributes=True)  # read straight from an AuditEntry row

    id: int
    at: float
    actor: str
    action: str
    target: str
    status: int
    detail: dict[str, Any]


def audit_entries(
    db: Any, offset: int, limit: int, *, actor: str | None = None, refused: bool = False
) -> tuple[list[AuditView], int]:
    """Audit entries, newest first, and how many match: of ``actor`` only, or only the
    ``refused`` ones (status 400 or more)."""
    where: list[Any] = [AuditRow.actor == actor] if actor else []
    if refused:
        where.append(AuditRow.status >= 400)
    with db.session() as s:
        total = s.scalar(select(func.count()).select_from(AuditRow).where(*where)) or 0
        rows = s.scalars(
            select(AuditRow).where(*where).order_by(AuditRow.id.desc()).offset(offset).limit(limit)
        )
        items = [AuditView.model_validate(r) for r in rows]
    return items, total


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
