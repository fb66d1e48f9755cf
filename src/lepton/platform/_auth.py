"""Users, roles and tokens: who a request comes from, and what that user may do.

Tokens are 256-bit random secrets; only their SHA-256 is stored, so a leaked database
holds no usable token. A token is found by its hash (a preimage search is what an attacker
would need, so the lookup's timing gives nothing away). Three kinds share one table:

- ``api``: a bearer token (``Authorization: Bearer lp_...``), revocable, shown once;
- ``login``: a one-time dashboard link (``/login?token=...``), valid for 15 minutes;
- ``session``: the dashboard cookie that a login link is exchanged for (12 hours).

At the first start of a server on an empty database, :meth:`Auth.bootstrap` creates the
``admin`` user and writes its token to ``LEPTON_HOME/admin-token`` (mode 0600), where the
local CLI and :class:`~lepton.platform.PlatformClient` find it.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from lepton._fs import atomic_write, private_dir
from lepton.errors import ConflictError, ForbiddenError, NotFoundError, PlatformError
from lepton.storage import Database
from lepton.storage.schema import ApiTokenRow, UserRow

__all__ = [
    "ROLES",
    "Auth",
    "ChangedUser",
    "Principal",
    "Role",
    "TokenView",
    "UserView",
    "admin_token_path",
    "hash_secret",
    "own_or_admin",
]

Role = Literal["viewer", "editor", "admin"]
ROLES: tuple[Role, ...] = ("viewer", "editor", "admin")  # each may do what those before may
TokenKind = Literal["api", "login", "session"]

LOGIN_TTL_S = 15 * 60
SESSION_TTL_S = 12 * 3600
_USER_NAME = re.compile(r"[a-z][a-z0-9._-]{0,63}")


def hash_secret(secret: str) -> str:
    """The SHA-256 (hex) under which a token is stored."""
    return hashlib.sha256(secret.encode()).hexdigest()


def admin_token_path(home: Path) -> Path:
    """Where the first admin's token is kept for the local CLI and client."""
    return home / "admin-token"


def allows(have: str, need: str) -> bool:
    """Whether role ``have`` may do what role ``need`` may."""
    return ROLES.index(have) >= ROLES.index(need)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Principal:
    """The authenticated caller of one request."""

    user_id: int
    name: str
    role: Role
    token_id: int
    via: Literal["bearer", "cookie"]

    def may(self, role: str) -> bool:
        """Whether this caller has ``role`` or a higher one."""
        return allows(self.role, role)


class UserView(BaseModel):
    """A user as the API shows it."""

    id: int
    name: str
    role: Role
    active: bool
    created_at: float


class ChangedUser(UserView):
    """A user after a change, and how many of its tokens the change revoked."""

    tokens_revoked: int = Field(
        description="Tokens, login links and dashboard sessions revoked by this change: all "
        "of a deactivated user's, for good (reactivating does not bring them back)."
    )


class TokenView(BaseModel):
    """A token as the API shows it: never its secret, which is shown once at creation."""

    id: int
    user_id: int
    name: str
    kind: TokenKind
    prefix: str = Field(description="The first characters of the secret, to tell tokens apart.")
    created_at: float
    expires_at: float | None
    last_used_at: float | None
    revoked_at: float | None


class NewUser(BaseModel):
    """The body of ``POST /api/v1/users``."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=f"^{_USER_NAME.pattern}$", examples=["alice"])
    role: Role = "viewer"


class UserChange(BaseModel):
    """The body of ``PATCH /api/v1/users/{id}``."""

    model_config = ConfigDict(extra="forbid")
    role: Role | None = None
    active: bool | None = None


class NewToken(BaseModel):
    """The body of ``POST /api/v1/users/{id}/tokens``."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=100, examples=["ci"])
    expires_in_days: int | None = Field(default=None, ge=1, le=3650)


def _user_view(row: UserRow) -> UserView:
    return UserView.model_validate(
        {
            "id": row.id,
            "name": row.name,
            "role": row.role,
            "active": row.active,
            "created_at": row.created_at,
        }
    )


def _token_view(row: ApiTokenRow) -> TokenView:
    return TokenView(
        id=row.id,
        user_id=row.user_id,
        name=row.name,
        kind=row.kind,  # type: ignore[arg-type]
        prefix=row.prefix,
        created_at=row.created_at,
        expires_at=row.expires_at,
        last_used_at=row.last_used_at,
        revoked_at=row.revoked_at,
    )


def own_or_admin(who: Principal, user_id: int) -> None:
    """Refuse (403) unless ``who`` is user ``user_id`` or an admin: the same answer whether
    that user exists or not."""
    if who.user_id != user_id and not who.may("admin"):
        raise ForbiddenError("you may manage only your own tokens; an admin may manage any")


def _visible_token(s: Session, token_id: int, seen_by: Principal | None) -> ApiTokenRow:
    row = s.get(ApiTokenRow, token_id)
    if row is None or (
        seen_by is not None and row.user_id != seen_by.user_id and not seen_by.may("admin")
    ):
        raise NotFoundError(f"no token with id {token_id}; see GET /api/v1/users/<id>/tokens")
    return row


class Auth:
    """Users and tokens in the metadata database.

    Args:
        db: The metadata database.
    """

    def __init__(self, db: Database) -> None:
        self.db = db

    # -- users ----------------------------------------------------------------------------
    def create_user(self, name: str, role: Role) -> UserView:
        """Add a user; a taken name is a :class:`ConflictError`."""
        if not _USER_NAME.fullmatch(name):
            raise PlatformError(
                f"invalid user name {name!r}: use lowercase letters, digits, '.', '_' or '-', "
                f"starting with a letter (e.g. 'alice')"
            )
        with self.db.session() as s:
            if s.scalar(select(UserRow).where(UserRow.name == name)) is not None:
                raise ConflictError(f"user {name!r} exists; pick another name")
            row = UserRow(name=name, role=role, active=True, created_at=time.time())
            s.add(row)
            s.flush()
            return _user_view(row)

    def get_user(self, user_id: int) -> UserView:
        """One user, or :class:`NotFoundError`."""
        with self.db.session() as s:
            row = s.get(UserRow, user_id)
            if row is None:
                raise NotFoundError(f"no user with id {user_id}; see GET /api/v1/users")
            return _user_view(row)

    def list_users(self, offset: int, limit: int) -> tuple[list[UserView], int]:
        """A page of users, oldest first, and how many there are."""
        with self.db.session() as s:
            total = s.scalar(select(func.count()).select_from(UserRow)) or 0
            rows = s.scalars(select(UserRow).order_by(UserRow.id).offset(offset).limit(limit))
            return [_user_view(r) for r in rows], total

    def change_user(self, user_id: int, change: UserChange, by: Principal) -> ChangedUser:
        """Change a user's role or deactivate it; nobody can demote or lock out themselves,
        so a server always keeps an admin who can undo a mistake.

        Deactivating revokes every token, login link and dashboard session of the user,
        so reactivating it later brings none of them back: it needs new tokens.
        """
        now = time.time()
        with self.db.session() as s:
            row = s.get(UserRow, user_id)
            if row is None:
                raise NotFoundError(f"no user with id {user_id}; see GET /api/v1/users")
            if row.id == by.user_id and (
                (change.role is not None and change.role != row.role) or change.active is False
            ):
                raise ConflictError(
                    "you cannot change your own role or deactivate yourself; ask another admin"
                )
            if change.role is not None:
                row.role = change.role
            if change.active is not None:
                row.active = change.active
            revoked = 0
            if change.active is False:
                live = s.scalars(
                    select(ApiTokenRow).where(
                        ApiTokenRow.user_id == user_id, ApiTokenRow.revoked_at.is_(None)
                    )
                )
                for token in live:
                    token.revoked_at, revoked = now, revoked + 1
            s.flush()
            return ChangedUser(**_user_view(row).model_dump(), tokens_revoked=revoked)

    # -- tokens ---------------------------------------------------------------------------
    def create_token(
        self,
        user_id: int,
        name: str,
        *,
        kind: TokenKind = "api",
        ttl_s: float | None = None,
    ) -> tuple[TokenView, str]:
        """A new token for ``user_id``: its record and its secret (not stored anywhere)."""
        secret = f"lp_{secrets.token_urlsafe(32)}"
        now = time.time()
        with self.db.session() as s:
            user = s.get(UserRow, user_id)
            if user is None:
                raise NotFoundError(f"no user with id {user_id}; see GET /api/v1/users")
            if not user.active:
                raise ConflictError(f"user {user.name!r} is deactivated; reactivate it first")
            row = ApiTokenRow(
                user_id=user_id,
                name=name,
                kind=kind,
                sha256=hash_secret(secret),
                prefix=secret[:10],
                created_at=now,
                expires_at=now + ttl_s if ttl_s is not None else None,
            )
            s.add(row)
            s.flush()
            return _token_view(row), secret

    def list_tokens(self, user_id: int, offset: int, limit: int) -> tuple[list[TokenView], int]:
        """A page of ``user_id``'s API tokens (not login links or sessions)."""
        where = (ApiTokenRow.user_id == user_id, ApiTokenRow.kind == "api")
        with self.db.session() as s:
            total = s.scalar(select(func.count()).select_from(ApiTokenRow).where(*where)) or 0
            rows = s.scalars(
                select(ApiTokenRow)
                .where(*where)
                .order_by(ApiTokenRow.id)
                .offset(offset)
                .limit(limit)
            )
            return [_token_view(r) for r in rows], total

    def get_token(self, token_id: int, *, seen_by: Principal | None = None) -> TokenView:
        """One token's record, or :class:`NotFoundError`.

        Args:
            token_id: The token's id.
            seen_by: The caller asking, if the answer goes to one: a token that is not
                theirs (unless they are an admin) is not found, with the very message of
                an id that does not exist, so ids tell nobody whose tokens exist.
        """
        with self.db.session() as s:
            return _token_view(_visible_token(s, token_id, seen_by))

    def revoke(self, token_id: int, *, by: Principal | None = None) -> TokenView:
        """Revoke a token at once (idempotent); ``by`` as ``seen_by`` of :meth:`get_token`."""
        with self.db.session() as s:
            row = _visible_token(s, token_id, by)
            row.revoked_at = row.revoked_at or time.time()
            s.flush()
            return _token_view(row)

    def authenticate(self, secret: str, kind: TokenKind = "api") -> Principal | None:
        """The caller a secret belongs to, or ``None`` (unknown, revoked, expired, or its
        user deactivated)."""
        if not secret.startswith("lp_") or len(secret) > 200:
            return None
        now = time.time()
        with self.db.session() as s:
            found = s.execute(
                select(ApiTokenRow, UserRow)
                .join(UserRow, UserRow.id == ApiTokenRow.user_id)
                .where(ApiTokenRow.sha256 == hash_secret(secret), ApiTokenRow.kind == kind)
            ).first()
            if found is None:
                return None
            token, user = found
            if token.revoked_at is not None or not user.active:
                return None
            if token.expires_at is not None and token.expires_at <= now:
                return None
            if kind == "login":  # one use only
                token.revoked_at = now
            elif token.last_used_at is None or now - token.last_used_at > 60:
                token.last_used_at = now  # at most one write a minute per token
            return Principal(
                user.id,
                user.name,
                user.role,  # type: ignore[arg-type]
                token.id,
                "cookie" if kind == "session" else "bearer",
            )

    # -- first start ----------------------------------------------------------------------
    def bootstrap(self, home: Path) -> str | None:
        """On an empty database, create the ``admin`` user and save its token to
        ``home/admin-token`` (mode 0600). Returns the new secret, or ``None`` when users
        exist already."""
        with self.db.session() as s:
            if s.scalar(select(func.count()).select_from(UserRow)):
                return None
        user = self.create_user("admin", "admin")
        _, secret = self.create_token(user.id, "local admin (created at first start)")
        private_dir(home)

        def write(tmp: Path) -> None:  # mkstemp made it 0600 already; say so anyway
            os.chmod(tmp, 0o600)
            tmp.write_text(secret + "\n")

        atomic_write(admin_token_path(home), write)
        return secret

    def login_link_secret(self, user_id: int) -> str:
        """A one-time secret for ``/login?token=...`` (15 minutes)."""
        return self.create_token(user_id, "login link", kind="login", ttl_s=LOGIN_TTL_S)[1]

    def admin_id(self) -> int:
        """The id of the oldest active admin (the one login links are made for)."""
        with self.db.session() as s:
            found = s.scalar(
                select(UserRow.id)
                .where(UserRow.role == "admin", UserRow.active.is_(True))
                .order_by(UserRow.id)
                .limit(1)
            )
        if found is None:
            raise NotFoundError("this server has no active admin; run `lepton users create`")
        return found
