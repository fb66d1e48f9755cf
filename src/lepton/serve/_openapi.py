"""The OpenAPI 3.1 document of a service, generated from its handlers' types."""

from __future__ import annotations

from typing import Any

from lepton._version import __version__
from lepton.serve._handler import Route

__all__ = ["openapi"]

_REF = "#/components/schemas/{model}"
_ERROR = {
    "type": "object",
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "details": {"type": "array", "items": {"type": "object"}},
            },
            "required": ["code", "message"],
        }
    },
    "required": ["error"],
}
_ERRORS = {
    "401": "missing or wrong bearer token",
    "413": "body over the size limit",
    "422": "the body does not match the handler's types",
    "503": "overloaded or draining; retry after Retry-After seconds",
    "504": "not answered within the deadline",
}


def _schema(adapter: Any, components: dict[str, Any]) -> dict[str, Any]:
    schema: dict[str, Any] = adapter.json_schema(ref_template=_REF, mode="serialization")
    components.update(schema.pop("$defs", {}))
    return schema


def _operation(route: Route, components: dict[str, Any]) -> dict[str, Any]:
    doc = (route.fn.__doc__ or "").strip()
    op: dict[str, Any] = {
        "operationId": route.name,
        "summary": doc.splitlines()[0] if doc else route.name,
        "responses": {},
    }
    if route.options.batched:
        op["description"] = (
            f"Dynamically batched (up to {route.options.batch_size} requests, "
            f"{route.options.max_wait_ms:g} ms adaptive wait). Send one input per request."
        )
    if route.request is not None:
        schema = route.request.json_schema(ref_template=_REF)
        components.update(schema.pop("$defs", {}))
        content: dict[str, Any] = {"application/json": {"schema": schema}}
        if route.image_fields:
            content["multipart/form-data"] = {"schema": schema}
            if len(route.image_fields) == 1:
                content["image/png"] = {"schema": {"type": "string", "format": "binary"}}
                content["image/jpeg"] = {"schema": {"type": "string", "format": "binary"}}
        op["requestBody"] = {"required": True, "content": content}
    item = _schema(route.response, components)
    if route.stream:
        media = "text/plain" if route.text_stream else "application/x-ndjson"
        ok = {"description": "a stream of items", "content": {media: {"schema": item}}}
    else:
        ok = {"description": "OK", "content": {"application/json": {"schema": item}}}
    op["responses"]["200"] = ok
    for status, text in _ERRORS.items():
        op["responses"][status] = {
            "description": text,
            "content": {"application/json": {"schema": {"$ref": _REF.format(model="Error")}}},
        }
    return op


def openapi(title: str, routes: list[Route]) -> dict[str, Any]:
    """Build the document: one operation per route, plus the built-in endpoints."""
    components: dict[str, Any] = {"Error": _ERROR}
    paths: dict[str, Any] = {}
    for route in routes:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route, components)
    builtins = [
        ("/healthz", "alive"),
        ("/readyz", "ready to serve (not loading, not draining)"),
        ("/metrics", "Prometheus metrics"),
    ]
    for path, text in builtins:
        paths[path] = {"get": {"summary": text, "responses": {"200": {"description": text}}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": __version__},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
