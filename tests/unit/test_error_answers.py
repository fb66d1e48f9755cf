"""One error body for every Lepton server and one status-to-error map for both clients
(lepton._wire): what the platform client and the service client raise for an answer."""

from __future__ import annotations

import json

import pytest

from lepton import _wire, errors
from lepton._wire import error_body, error_from_answer
from lepton.errors import (
    ConflictError,
    ForbiddenError,
    NotFoundError,
    OverloadedError,
    PlatformError,
    QuotaExceededError,
    RequestError,
    ServingError,
    UnauthorizedError,
)


def _answer(code: str = "some_code", message: str = "what to do") -> str:
    return json.dumps(error_body(code, message))


def test_the_error_body_has_the_documented_shape() -> None:
    assert error_body("not_found", "no job 9") == {
        "error": {"code": "not_found", "message": "no job 9"}
    }
    assert error_body("invalid", "bad", details=[{"loc": ["x"]}])["error"]["details"] == [
        {"loc": ["x"]}
    ]


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, PlatformError),  # RequestError is a service's: the platform's own 400 stays
        (401, UnauthorizedError),
        (403, ForbiddenError),
        (404, NotFoundError),
        (409, ConflictError),
        (429, QuotaExceededError),
        (500, PlatformError),
    ],
)
def test_the_platform_client_gets_platform_errors(status: int, cls: type[Exception]) -> None:
    exc = error_from_answer(status, _answer(), answered_by=PlatformError)
    assert type(exc) is cls
    assert (exc.code, exc.status, str(exc)) == (
        "some_code",
        status,
        f"{status} some_code: what to do",
    )


@pytest.mark.parametrize(
    ("status", "cls"),
    [(400, RequestError), (401, UnauthorizedError), (404, ServingError), (503, OverloadedError)],
)
def test_the_service_client_gets_serving_errors(status: int, cls: type[Exception]) -> None:
    assert type(error_from_answer(status, _answer(), answered_by=ServingError)) is cls


def test_an_answer_without_a_lepton_body_keeps_its_text_or_reason() -> None:
    exc = error_from_answer(502, "bad gateway from proxy", answered_by=PlatformError)
    assert (exc.code, str(exc)) == ("http_error", "502 http_error: bad gateway from proxy")
    empty = error_from_answer(502, "", answered_by=ServingError, reason="Bad Gateway")
    assert str(empty) == "502 http_error: Bad Gateway"


def test_every_class_the_map_names_is_in_the_tree() -> None:
    named = {cls for classes in _wire._BY_STATUS.values() for cls in classes}
    assert all(cls.__name__ in errors.__all__ for cls in named)
