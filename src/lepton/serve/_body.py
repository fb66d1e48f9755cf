"""Request bodies: JSON, ``multipart/form-data`` uploads and raw image bytes."""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError

from lepton.errors import RequestError
from lepton.serve._handler import Route

__all__ = ["decode_body", "validation_message"]

_RAW_IMAGE_TYPES = (b"image/png", b"image/jpeg", b"image/jpg", b"application/octet-stream")


def validation_message(exc: ValidationError) -> tuple[str, list[dict[str, Any]]]:
    """A one-line message and JSON-safe details of a pydantic validation error."""
    details = [
        {"loc": [str(p) for p in e["loc"]], "msg": e["msg"], "type": e["type"]}
        for e in exc.errors(include_url=False, include_context=False, include_input=False)
    ]
    first = details[0] if details else {"loc": [], "msg": "invalid"}
    where = ".".join(first["loc"]) or "body"
    more = f" (and {len(details) - 1} more)" if len(details) > 1 else ""
    return f"invalid request: {where}: {first['msg']}{more}", details


def decode_body(route: Route, content_type: bytes, body: bytes) -> Any:
    """Validate one request's body into the route's request model.

    Raises:
        pydantic.ValidationError: The body does not match the handler's types (422).
        RequestError: The body cannot be read at all (400).
    """
    assert route.request is not None
    kind = content_type.split(b";", 1)[0].strip().lower()
    json_type = kind == b"application/json" or kind.endswith(b"+json")
    if not body and (json_type or not kind):
        raise RequestError(f"{route.path} needs a JSON body, e.g. {_example(route)}")
    if json_type:
        return route.request.validate_json(body)
    if kind in (b"", b"application/x-www-form-urlencoded", b"text/plain"):
        # A web page can send these cross-site without asking (a "simple" request):
        # taking them as JSON would let any site call a loopback service.
        sent = kind.decode() if kind else "no Content-Type"
        raise _unsupported(
            f"the body was sent as {sent}; send JSON with 'Content-Type: application/json' "
            f"(curl: --json '{{...}}', or -H 'Content-Type: application/json' -d '{{...}}')"
        )
    if kind == b"multipart/form-data":
        return route.request.validate_python(_form(route, content_type, body))
    if kind in _RAW_IMAGE_TYPES:
        if len(route.image_fields) != 1:
            raise RequestError(
                f"{route.path} takes JSON (fields: {', '.join(route.params)}); a raw image "
                f"body fits only a handler with exactly one image field"
            )
        return route.request.validate_python({route.image_fields[0]: body})
    raise _unsupported(
        f"unsupported Content-Type {kind.decode(errors='replace')!r}; send application/json, "
        f"multipart/form-data or image/png|jpeg"
    )


def _unsupported(message: str) -> RequestError:
    return RequestError(message, status=415, code="unsupported_media_type")


def _example(route: Route) -> str:
    return "{" + ", ".join(f'"{p}": ...' for p in route.params) + "}"


def _form(route: Route, content_type: bytes, body: bytes) -> dict[str, Any]:
    from python_multipart.multipart import MultipartParser, parse_options_header

    _, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if not boundary:
        raise RequestError("multipart/form-data without a boundary; let your client set it")
    parts: list[dict[str, Any]] = []
    header: list[bytes] = [b"", b""]

    def on_part_begin() -> None:
        parts.append({"headers": {}, "data": bytearray()})

    def on_header_field(data: bytes, start: int, end: int) -> None:
        header[0] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        header[1] += data[start:end]

    def on_header_end() -> None:
        parts[-1]["headers"][header[0].strip().lower()] = header[1].strip()
        header[0], header[1] = b"", b""

    def on_part_data(data: bytes, start: int, end: int) -> None:
        parts[-1]["data"] += data[start:end]

    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": on_part_begin,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_part_data": on_part_data,
        },
    )
    try:
        parser.write(body)
        parser.finalize()
    except Exception as exc:
        raise RequestError(f"malformed multipart body ({exc})") from None
    fields: dict[str, Any] = {}
    for part in parts:
        _, disposition = parse_options_header(part["headers"].get(b"content-disposition", b""))
        name = disposition.get(b"name", b"").decode(errors="replace")
        if not name:
            raise RequestError("a multipart part has no name; name each field")
        data = bytes(part["data"])
        if b"filename" in disposition or name in route.image_fields:
            fields[name] = data
        else:
            fields[name] = _form_value(data.decode("utf-8", errors="replace"))
    return fields


def _form_value(text: str) -> Any:
    # Form fields are text; nested values (lists, objects) may be sent as JSON text.
    if text[:1] in ("[", "{"):
        try:
            return json.loads(text)
        except ValueError:
            return text
    return text
