"""How an error travels over HTTP: the one JSON body every Lepton server answers with,
and the one status-to-class map both clients (``lp.Client``, ``PlatformClient``) use.

The exception classes themselves are in :mod:`lepton.errors`.
"""

from __future__ import annotations

import json
from typing import Any

from lepton.errors import (
    ConflictError,
    DeadlineExceededError,
    ForbiddenError,
    MethodNotAllowedError,
    NotFoundError,
    OverloadedError,
    PayloadTooLargeError,
    PlatformError,
    QuotaExceededError,
    RequestError,
    ServingError,
    UnauthorizedError,
)

__all__ = ["error_body", "error_from_answer"]


def error_body(code: str, message: str, **extra: Any) -> dict[str, Any]:
    """The JSON body of every HTTP error Lepton answers, ``{"error": {"code", "message"}}``
    (``extra`` adds fields, e.g. ``details``).

    Example:
        >>> error_body("not_found", "no job with id 9")
        {'error': {'code': 'not_found', 'message': 'no job with id 9'}}
    """
    return {"error": {"code": code, "message": message, **extra}}


# The classes an HTTP status may mean, most specific first; a client takes the first
# one of the answering server's family.
_BY_STATUS: dict[int, tuple[type[ServingError] | type[PlatformError], ...]] = {
    400: (RequestError,),
    401: (UnauthorizedError,),
    403: (ForbiddenError,),
    404: (NotFoundError,),
    405: (MethodNotAllowedError,),
    408: (RequestError,),
    409: (ConflictError,),
    413: (PayloadTooLargeError,),
    415: (RequestError,),
    422: (RequestError,),
    429: (OverloadedError, QuotaExceededError),
    431: (RequestError,),
    503: (OverloadedError,),
    504: (DeadlineExceededError,),
}


def error_from_answer(
    status: int,
    text: str,
    *,
    answered_by: type[ServingError] | type[PlatformError],
    reason: str = "",
) -> ServingError | PlatformError:
    """The error a client raises for an HTTP error answer (status >= 400).

    The class is the one ``status`` maps to within the family of the server that
    answered (``ServingError`` for a service, ``PlatformError`` for the platform), else
    the family itself; a 401 is an :class:`UnauthorizedError` from either. The error
    carries the server's ``code`` and ``status``, and its message reads
    ``"STATUS CODE: MESSAGE"``.

    Args:
        status: The HTTP status.
        text: The body; ``{"error": {"code", "message"}}`` from a Lepton server.
        answered_by: ``ServingError`` or ``PlatformError``.
        reason: The status line's phrase, the message when the body is empty.

    Example:
        >>> body = '{"error": {"code": "not_found", "message": "no job 9"}}'
        >>> exc = error_from_answer(404, body, answered_by=PlatformError)
        >>> type(exc).__name__, exc.code, str(exc)
        ('NotFoundError', 'not_found', '404 not_found: no job 9')
    """
    try:
        error = json.loads(text)["error"]
        code, message = str(error["code"]), str(error["message"])
    except (ValueError, KeyError, TypeError):
        code, message = "http_error", text[:200] or reason
    cls: type[ServingError] | type[PlatformError] = answered_by
    for candidate in _BY_STATUS.get(status, ()):
        if issubclass(candidate, answered_by) or candidate is UnauthorizedError:
            cls = candidate
            break
    exc = cls(f"{status} {code}: {message}")
    exc.code = code
    exc.status = status
    return exc
