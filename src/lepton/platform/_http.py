"""What every route shares: its authorization rule, the caller, pages, and errors as JSON.

Authorization is deny-by-default: a route answers only if its endpoint was declared with
:func:`allow` (a minimum role) or :func:`public`. :func:`authorize` runs before every
route and refuses one without a rule with 403, so a route someone forgets to declare is
closed, not open (and ``tests/unit/test_server_auth.py`` lists every route's rule). The
caller is found from the request's headers by :mod:`~lepton.platform._guards` before any
of the request is parsed; :func:`authorize` only reads what the guards found.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Annotated, Any, Generic, TypeVar

from fastapi import Depends, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from lepton._wire import error_body
from lepton.errors import (
    BudgetExceededError,
    ChecksumError,
    DataError,
    DatasetNotFoundError,
    ForbiddenError,
    GraphNotFoundError,
    LeptonError,
    ModelNotFoundError,
    NoBudgetError,
    PlatformError,
    QueryLimitError,
    RunNotFoundError,
    ServingError,
    StudyNotFoundError,
    UnauthorizedError,
    UnsafeFormatError,
)
from lepton.platform._auth import ROLES, Principal, Role

__all__ = [
    "Page",
    "Paging",
    "RecordId",
    "StudyName",
    "allow",
    "authorize",
    "caller",
    "install_error_handlers",
    "may_read",
    "public",
    "rule_of",
]

log = logging.getLogger("lepton.platform")
F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")
_RULE = "__lepton_rule__"
_AUDIT = "__lepton_audit__"
PUBLIC = "public"
SESSION_COOKIE = "lepton_session"
# Keys in the request's scope state, set by the guards before any route runs.
PRINCIPAL = "principal"  # the caller (a Principal), or None
REFUSAL = "lepton_refusal"  # why credentials that were sent are refused (a LeptonError)


def allow(role: Role, *, audit: bool = True) -> Callable[[F], F]:
    """Declare the least role that may call a route (``viewer`` < ``editor`` < ``admin``).

    ``audit=False`` keeps a POST that changes nothing (a prediction) out of the audit log.
    """
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; use one of {ROLES}")

    def mark(endpoint: F) -> F:
        setattr(endpoint, _RULE, role)
        setattr(endpoint, _AUDIT, audit)
        return endpoint

    return mark


def public(endpoint: F) -> F:
    """Declare a route open without a token (health checks, the login link)."""
    setattr(endpoint, _RULE, PUBLIC)
    setattr(endpoint, _AUDIT, False)
    return endpoint


def rule_of(endpoint: Any) -> str | None:
    """The rule a route's endpoint was declared with, if any."""
    return getattr(endpoint, _RULE, None)


def audited(endpoint: Any) -> bool:
    """Whether a state-changing call of this endpoint goes to the audit log."""
    return bool(getattr(endpoint, _AUDIT, True))


def iter_routes(routes: Iterable[Any], prefix: str = "") -> Iterator[tuple[str, str, Any]]:
    """``(method, path, endpoint)`` of every route, routers included in routers too."""
    for route in routes:
        included = getattr(route, "original_router", None)  # FastAPI >= 0.16x keeps routers
        if included is not None:
            context = getattr(route, "include_context", None)
            yield from iter_routes(included.routes, prefix + getattr(context, "prefix", ""))
            continue
        endpoint = getattr(route, "endpoint", None)
        for method in sorted(getattr(route, "methods", None) or ()):
            if method != "HEAD" and endpoint is not None:
                yield method, prefix + route.path, endpoint


def check_rules(routes: Iterable[Any]) -> None:
    """Refuse to build an app with a route that has no rule (it would answer 403 anyway)."""
    missing = [f"{m} {p}" for m, p, e in iter_routes(routes) if rule_of(e) is None]
    if missing:
        raise RuntimeError(f"routes without an authorization rule: {', '.join(missing)}")


def may_read(rule: str | None, principal: Principal | None) -> bool:
    """Whether a request to a route with ``rule`` from ``principal`` (``None``: nobody
    known) may go as far as reading its body: a public route, or a caller whose role the
    rule allows. Everything else is refused before any of the request is parsed."""
    if rule == PUBLIC:
        return True
    return rule is not None and principal is not None and principal.may(rule)


def authorize(request: Request) -> None:
    """Run before every route: check the route's rule against the caller that
    :mod:`~lepton.platform._guards` found from the request's headers.

    Raises:
        ForbiddenError: The route has no rule (deny by default), the role is too low, or a
            dashboard cookie came with a state-changing request from another site.
        UnauthorizedError: No valid token (bearer header or dashboard session cookie).
    """
    rule = rule_of(request.scope.get("endpoint"))
    if rule is None:
        raise ForbiddenError("this route has no authorization rule, so nobody may call it")
    if rule == PUBLIC:
        return
    state = request.scope.get("state") or {}
    refusal = state.get(REFUSAL)
    if isinstance(refusal, LeptonError):
        raise refusal
    principal = state.get(PRINCIPAL)
    if not isinstance(principal, Principal):  # also when no guard ran: deny by default
        raise UnauthorizedError(
            "missing or invalid token: send 'Authorization: Bearer <token>' (the local admin "
            "token is in LEPTON_HOME/admin-token) or open the login link the server printed"
        )
    if not principal.may(rule):
        raise ForbiddenError(f"this needs the {rule} role; you are {principal.role}")


def caller(request: Request) -> Principal:
    """The authenticated caller (a route dependency)."""
    principal: Principal = request.state.principal
    return principal


class Paging(BaseModel):
    """``?offset=&limit=`` of a list route."""

    offset: int
    limit: int


def _paging(
    offset: Annotated[int, Query(ge=0, le=10**9, description="Items to skip.")] = 0,
    limit: Annotated[int, Query(ge=1, le=500, description="Items per page.")] = 50,
) -> Paging:
    return Paging(offset=offset, limit=limit)


PageQuery = Annotated[Paging, Depends(_paging)]

# A record id or version number in a path: bounded, so a huge number is a 422, not an
# integer overflow in the database driver.
RecordId = Annotated[int, Path(ge=0, le=2**31 - 1)]
# Optuna stores any study name of up to 512 characters, so only names no study can have
# in a URL are refused: control characters (PostgreSQL cannot even compare a NUL), a
# slash (it splits the path) or more than 512 characters.
StudyName = Annotated[
    str,
    Path(
        min_length=1,
        max_length=512,
        pattern=r"^[^\x00-\x1f\x7f/]+$",
        description="The study's name (`study=` of lp.tune; `job-ID` for a tune job).",
    ),
]


class Page(BaseModel, Generic[T]):
    """One page of a list: its items, the total count, and where the page starts."""

    items: list[T]
    total: int
    offset: int
    limit: int

    @classmethod
    def of(cls, found: tuple[list[T], int], paging: Paging) -> Page[T]:
        items, total = found
        return cls(items=items, total=total, offset=paging.offset, limit=paging.limit)


def status_of(exc: LeptonError) -> int:
    """The HTTP status for a Lepton error."""
    if isinstance(exc, PlatformError | ServingError):
        return exc.status
    if isinstance(
        exc,
        DatasetNotFoundError
        | ModelNotFoundError
        | RunNotFoundError
        | StudyNotFoundError
        | GraphNotFoundError,
    ):
        return 404
    if isinstance(exc, QueryLimitError):
        return 422  # a valid query past its time or row limit
    if isinstance(exc, UnsafeFormatError):
        return 415
    if isinstance(exc, BudgetExceededError):
        return 403  # the budget forbids it; raising it is a data owner's decision
    if isinstance(exc, NoBudgetError):
        return 409
    if isinstance(exc, ChecksumError):
        return 500
    if isinstance(exc, DataError):
        return 422
    return 400


_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def install_error_handlers(app: Any) -> None:
    """Every error becomes ``{"error": {...}}`` with a code; never a traceback."""

    async def lepton_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, LeptonError)
        status = status_of(exc)
        message = exc.message
        if status >= 500:
            log.error("%s: %s", type(exc).__name__, exc.message)
        if status == 500:  # a fault of this server: its details (paths, files) stay in its log
            message = "the server failed on this request; its log has the details"
        headers = {}
        if isinstance(exc, ServingError) and exc.retry_after is not None:
            headers["Retry-After"] = str(max(1, round(exc.retry_after)))
        if status == 401:
            headers["WWW-Authenticate"] = "Bearer"
        return JSONResponse(error_body(exc.code, message), status, headers=headers)

    async def invalid(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        details = [
            {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", ""))} for e in exc.errors()
        ]
        first = details[0] if details else {"loc": [], "msg": "invalid request"}
        where = ".".join(str(p) for p in first["loc"])
        return JSONResponse(
            error_body("invalid_request", f"{where}: {first['msg']}", details=details), 422
        )

    async def http_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        return JSONResponse(error_body(code, str(exc.detail)), exc.status_code, headers=exc.headers)

    async def crash(_: Request, exc: Exception) -> JSONResponse:
        # never the exception's text: it may name files, paths or queries of this server
        log.exception("unhandled error", exc_info=exc)
        return JSONResponse(
            error_body(
                "internal_error", "the server failed on this request; its log has the details"
            ),
            500,
        )

    app.add_exception_handler(LeptonError, lepton_error)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, crash)
