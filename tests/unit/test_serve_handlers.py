"""``@lp.handler`` validation, ``lp.Service`` routes, the I/O types and the client helpers.

Everything here runs in-process: no sockets, no subprocesses.
"""

from __future__ import annotations

import base64
import io
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from pydantic import BaseModel, TypeAdapter, ValidationError

import lepton as lp
from lepton.errors import (
    ConfigError,
    DeadlineExceededError,
    OverloadedError,
    PayloadTooLargeError,
    RequestError,
    ServingError,
    UnauthorizedError,
)
from lepton.serve import HandlerOptions, Service, load_service_class
from lepton.serve._client import _error, _jsonable
from lepton.serve._openapi import openapi


def png_bytes(
    width: int = 6, height: int = 4, mode: str = "RGB", color: Any = (255, 0, 0)
) -> bytes:
    from PIL import Image as PILImage

    buffer = io.BytesIO()
    PILImage.new(mode, (width, height), color).save(buffer, format="PNG")
    return buffer.getvalue()


# -- @lp.handler options --------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "hint"),
    [
        ({"batch_size": 0}, "batch_size must be >= 1"),
        ({"batch_size": -3}, "batch_size must be >= 1"),
        ({"max_wait_ms": -1}, "max_wait_ms must be >= 0"),
        ({"max_queue": 0}, "max_queue must be >= 1"),
        ({"timeout_s": 0}, "timeout_s must be > 0"),
        ({"workers": 0}, "workers must be >= 1"),
        ({"method": "PUT"}, "method must be 'GET' or 'POST'"),
        ({"method": "post"}, "method must be 'GET' or 'POST'"),
        ({"path": "predict"}, "path must start with '/'"),
    ],
)
def test_bad_handler_options_are_config_errors_naming_the_fix(options, hint):
    with pytest.raises(ConfigError, match=r"@lp\.handler") as info:
        lp.handler(**options)
    assert hint in str(info.value)


def test_unknown_handler_option_is_refused():
    with pytest.raises(TypeError):
        lp.handler(batchsize=4)


def test_handler_records_options_and_keeps_the_function():
    def fn(self, x: int) -> int:
        return x

    marked = lp.handler(batch_size=1, path="/p", timeout_s=3)(fn)
    assert marked is fn
    assert fn.__lepton_handler__ == HandlerOptions(path="/p", timeout_s=3)
    bare = lp.handler(fn)
    assert bare.__lepton_handler__ == HandlerOptions()
    assert not HandlerOptions().batched
    assert HandlerOptions(batch_size=2).batched


def _routes_error(cls: type[Service]) -> str:
    with pytest.raises(ConfigError) as info:
        cls.routes()
    return str(info.value)


def test_get_handler_with_parameters_is_refused():
    class S(Service):
        @lp.handler(method="GET")
        def info(self, x: int) -> int:
            return x

    message = _routes_error(S)
    assert "S.info" in message
    assert "GET handler takes no parameters" in message


@pytest.mark.parametrize("where", ["param", "return"])
def test_batched_handler_needs_list_annotations(where):
    if where == "param":

        class S(Service):
            @lp.handler(batch_size=4)
            def f(self, x: int) -> list[int]:
                return [x]

    else:

        class S(Service):
            @lp.handler(batch_size=4)
            def f(self, x: list[int]) -> int:
                return 0

    message = _routes_error(S)
    assert "must be annotated list[...]" in message
    assert "batched" in message
    assert ("S.f(x)" if where == "param" else "S.f return") in message


def test_batched_handler_needs_a_parameter():
    class S(Service):
        @lp.handler(batch_size=4)
        def f(self) -> list[int]:
            return []

    assert "needs at least one parameter" in _routes_error(S)


def test_streaming_handler_cannot_be_batched():
    class S(Service):
        @lp.handler(batch_size=4)
        def f(self, x: list[int]) -> Iterator[int]:
            yield from x

    assert "cannot be batched" in _routes_error(S)


def test_parameters_need_annotations():
    class S(Service):
        @lp.handler
        def f(self, x) -> int:  # type: ignore[no-untyped-def]
            return 1

    message = _routes_error(S)
    assert "'x'" in message
    assert "needs a type annotation" in message


def test_var_args_are_refused():
    class S(Service):
        @lp.handler
        def f(self, **kwargs: int) -> int:
            return 1

    assert "*args/**kwargs" in _routes_error(S)


def test_unresolvable_hints_are_config_errors():
    class S(Service):
        @lp.handler
        def f(self, x: NoSuchType) -> int:  # type: ignore[name-defined] # noqa: F821
            return 1

    assert "cannot resolve its type hints" in _routes_error(S)


def test_service_without_handlers_is_refused():
    class Empty(Service):
        def helper(self) -> int:
            return 1

    message = _routes_error(Empty)
    assert "Empty has no handlers" in message
    assert "@lp.handler" in message
    with pytest.raises(ConfigError):
        Empty().asgi()


def test_duplicate_paths_are_refused():
    class S(Service):
        @lp.handler(path="/same")
        def a(self, x: int) -> int:
            return x

        @lp.handler(path="/same")
        def b(self, x: int) -> int:
            return x

    message = _routes_error(S)
    assert "/same is taken" in message
    assert "path=" in message


def test_same_path_with_different_methods_is_allowed():
    class S(Service):
        @lp.handler(path="/thing", method="GET")
        def get_thing(self) -> int:
            return 1

        @lp.handler(path="/thing")
        def set_thing(self, x: int) -> int:
            return x

    assert sorted((r.method, r.path) for r in S.routes()) == [("GET", "/thing"), ("POST", "/thing")]


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics", "/openapi.json", "/"])
def test_builtin_paths_are_reserved(path):
    class S(Service):
        @lp.handler(path=path)
        def f(self, x: int) -> int:
            return x

    assert f"route {path} is taken" in _routes_error(S)


def test_method_named_like_a_builtin_is_refused():
    class S(Service):
        @lp.handler(method="GET")
        def healthz(self) -> int:
            return 1

    assert "/healthz is taken" in _routes_error(S)


class Point(BaseModel):
    x: float


def test_route_reads_signature_defaults_and_stream_kinds():
    class S(Service):
        @lp.handler
        def add(self, a: int, b: int = 2) -> int:
            return a + b

        @lp.handler
        def norm(self, p: Point) -> float:
            return p.x

        @lp.handler
        def words(self, n: int) -> Iterator[str]:
            yield "a"

        @lp.handler(batch_size=8)
        async def up(self, text: list[str]) -> list[str]:
            return text

    routes = {r.name: r for r in S.routes()}
    assert routes["add"].path == "/add"
    assert routes["add"].params == ["a", "b"]
    assert not routes["add"].body_is_model
    assert routes["norm"].body_is_model
    assert routes["words"].stream
    assert routes["words"].text_stream
    assert routes["up"].is_async
    assert routes["up"].options.batch_size == 8
    # the default of b is part of the request model; unknown fields are refused
    assert routes["add"].arguments(routes["add"].request.validate_python({"a": 1})) == {
        "a": 1,
        "b": 2,
    }
    with pytest.raises(ValidationError):
        routes["add"].request.validate_python({"a": 1, "c": 3})


def test_asgi_runs_setup_and_binds_handlers_to_the_instance():
    calls: list[str] = []

    class S(Service):
        def setup(self) -> None:
            calls.append("setup")
            self.offset = 10

        @lp.handler
        def add(self, x: int) -> int:
            return x + self.offset

    service = S()
    app = service.asgi()
    assert calls == ["setup"]
    route = app.routes[("POST", "/add")]
    assert route.fn(x=1) == 11


# -- load_service_class -----------------------------------------------------------------


@pytest.fixture
def isolated_imports(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setattr(sys, "modules", dict(sys.modules))


@pytest.mark.usefixtures("isolated_imports")
def test_load_service_class_from_a_file(tmp_path: Path):
    app = tmp_path / "my_app.py"
    app.write_text(
        "import lepton as lp\n"
        "class Echo(lp.Service):\n"
        "    @lp.handler\n"
        "    def echo(self, text: str) -> str:\n"
        "        return text\n"
        "NotAService = int\n"
    )
    cls = load_service_class(f"{app}:Echo")
    assert issubclass(cls, Service)
    assert [r.path for r in cls.routes()] == ["/echo"]
    with pytest.raises(ConfigError, match=r"not an lp\.Service subclass"):
        load_service_class(f"{app}:NotAService")
    with pytest.raises(ConfigError, match=r"not an lp\.Service subclass"):
        load_service_class(f"{app}:Missing")


@pytest.mark.usefixtures("isolated_imports")
@pytest.mark.parametrize(
    ("target", "match"),
    [
        ("no_colon.py", r"FILE\.py:Class"),
        ("app.py:", r"FILE\.py:Class"),
        ("/does/not/exist.py:Svc", "no such file"),
        ("lepton_no_such_module_xyz:Svc", "cannot import"),
    ],
)
def test_load_service_class_bad_targets(target, match):
    with pytest.raises(ConfigError, match=match):
        load_service_class(target)


def test_load_service_class_from_a_module():
    assert load_service_class("lepton.serve:ModelService") is lp.serve.ModelService


# -- lp.Image ---------------------------------------------------------------------------


def test_image_to_tensor_grayscale_resized():
    image = lp.Image.from_bytes(png_bytes(6, 4, "RGB", (255, 255, 255)))
    assert image.size == (6, 4)
    x = image.to_tensor(channels=1, size=(8, 8))
    assert x.shape == (1, 8, 8)
    assert x.dtype == torch.float32
    assert torch.allclose(x, torch.ones_like(x))


def test_image_to_tensor_keeps_channels_and_value_range():
    rgb = lp.Image.from_bytes(png_bytes(5, 3, "RGB", (255, 0, 51)))
    x = rgb.to_tensor()
    assert x.shape == (3, 3, 5)  # (C, H, W)
    assert float(x.min()) >= 0.0
    assert float(x.max()) <= 1.0
    assert torch.allclose(x[:, 0, 0], torch.tensor([1.0, 0.0, 0.2]))
    assert rgb.to_tensor(size=(2, 7)).shape == (3, 2, 7)  # size is (height, width)
    gray = lp.Image.from_bytes(png_bytes(5, 3, "L", 128))
    assert gray.to_tensor().shape == (1, 3, 5)
    assert gray.to_tensor(channels=3).shape == (3, 3, 5)
    assert torch.allclose(gray.to_tensor(), torch.full((1, 3, 5), 128 / 255))


def test_image_round_trips_png_base64_and_data_url():
    data = png_bytes(3, 2)
    text = base64.b64encode(data).decode()
    for value in (data, text, f"data:image/png;base64,{text}"):
        image = TypeAdapter(lp.Image).validate_python(value)
        assert image.size == (3, 2)
    # serialization is base64 PNG, which decodes back to the same pixels
    dumped = TypeAdapter(lp.Image).dump_python(lp.Image.from_bytes(data), mode="json")
    again = lp.Image.from_base64(dumped)
    assert torch.equal(again.to_tensor(), lp.Image.from_bytes(data).to_tensor())
    assert "Image(3x2" in repr(again)


def test_image_jpeg_is_accepted():
    from PIL import Image as PILImage

    buffer = io.BytesIO()
    PILImage.new("RGB", (4, 4), (0, 0, 255)).save(buffer, format="JPEG")
    assert lp.Image.from_bytes(buffer.getvalue()).size == (4, 4)


@pytest.mark.parametrize(
    ("value", "match"),
    [
        (b"\x80\x04\x95\x00\x00\x00\x00", "not a PNG or JPEG"),
        (b"GIF89a....", "not a PNG or JPEG"),
        (b"\x89PNG\r\n\x1a\nthis is not a png", "could not be decoded"),
        ("not base64 at all!", "must be base64"),
        (123, "must be base64 text"),
    ],
)
def test_image_refuses_non_images(value, match):
    with pytest.raises(ValidationError, match=match):
        TypeAdapter(lp.Image).validate_python(value)


def test_image_over_the_pixel_limit_is_refused_before_decoding(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr("lepton.serve._types.MAX_IMAGE_PIXELS", 100)
    assert lp.Image.from_bytes(png_bytes(10, 10)).size == (10, 10)
    with pytest.raises(ValueError, match="over the limit of 100"):
        lp.Image.from_bytes(png_bytes(11, 10))


def test_image_json_schema_is_base64_string():
    schema = TypeAdapter(lp.Image).json_schema()
    assert schema["type"] == "string"
    assert schema["format"] == "byte"


# -- lp.Tensor ----------------------------------------------------------------------------


def test_tensor_validates_nested_lists_to_float32():
    adapter = TypeAdapter(lp.Tensor)
    x = adapter.validate_python([[1, 2, 3], [4, 5, 6]])
    assert isinstance(x, torch.Tensor)
    assert x.dtype == torch.float32
    assert x.shape == (2, 3)
    assert torch.equal(x, torch.tensor([[1.0, 2, 3], [4, 5, 6]]))
    assert adapter.validate_json(b"2.5").item() == 2.5
    assert adapter.dump_python(x, mode="json") == [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]
    assert json.loads(adapter.dump_json(torch.tensor([0.5]))) == [0.5]


@pytest.mark.parametrize("value", [[[1, 2], [3]], "abc", {"a": 1}, [[1, 2], "x"]])
def test_tensor_refuses_ragged_and_non_numeric_values(value):
    with pytest.raises(ValidationError, match="rectangular nested list"):
        TypeAdapter(lp.Tensor).validate_python(value)


def test_tensor_in_a_request_model():
    class Req(BaseModel):
        inputs: lp.Tensor

    req = Req.model_validate_json(b'{"inputs": [[0, 1], [2, 3]]}')
    assert req.inputs.dtype == torch.float32
    assert req.model_dump(mode="json") == {"inputs": [[0.0, 1.0], [2.0, 3.0]]}
    assert "anyOf" in Req.model_json_schema()["properties"]["inputs"]


# -- lp.Prediction ------------------------------------------------------------------------


def test_prediction_dumps_and_is_frozen():
    p = lp.Prediction(label=3, score=0.75, probabilities=[0.25, 0.75])
    assert p.model_dump() == {
        "label": 3,
        "score": 0.75,
        "probabilities": [0.25, 0.75],
        "values": None,
    }
    assert json.loads(p.model_dump_json(exclude_none=True)) == {
        "label": 3,
        "score": 0.75,
        "probabilities": [0.25, 0.75],
    }
    assert lp.Prediction(label="cat").label == "cat"
    assert lp.Prediction(values=[1.5]).values == [1.5]
    with pytest.raises(ValidationError):
        p.score = 0.1  # type: ignore[misc]
    with pytest.raises(ValidationError):
        lp.Prediction(score="high")


# -- lp.Client helpers (no sockets: httpx.MockTransport) ---------------------------------


def test_jsonable_turns_bytes_paths_and_tensors_into_json(tmp_path: Path):
    data = png_bytes(2, 2)
    image = tmp_path / "x.png"
    image.write_bytes(data)
    b64 = base64.b64encode(data).decode()
    value = {
        "image": image,
        "raw": data,
        "t": torch.tensor([[1.0, 2.0]]),
        "nested": [(1, bytearray(b"ab")), {"k": torch.tensor(3)}],
        "plain": "text",
    }
    assert _jsonable(value) == {
        "image": b64,
        "raw": b64,
        "t": [[1.0, 2.0]],
        "nested": [[1, "YWI="], {"k": 3}],
        "plain": "text",
    }
    json.dumps(_jsonable(value))


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, RequestError),
        (401, UnauthorizedError),
        (413, PayloadTooLargeError),
        (422, RequestError),
        (429, OverloadedError),
        (503, OverloadedError),
        (504, DeadlineExceededError),
        (500, ServingError),
        (404, ServingError),
    ],
)
def test_client_error_maps_status_to_exception(status, cls):
    body = {"error": {"code": "some_code", "message": "what to do"}}
    exc = _error(httpx.Response(status, json=body))
    assert type(exc) is cls
    assert exc.code == "some_code"
    assert exc.status == status
    assert str(exc) == f"{status} some_code: what to do"


def test_client_error_without_json_body():
    exc = _error(httpx.Response(502, text="bad gateway from proxy"))
    assert type(exc) is ServingError
    assert exc.code == "http_error"
    assert "bad gateway from proxy" in str(exc)


def _mock_client(responder: Any) -> lp.Client:
    client = lp.Client("http://svc", retries=2, backoff=0.0)
    client._http = httpx.Client(base_url="http://svc", transport=httpx.MockTransport(responder))
    return client


class _Demo(Service):
    @lp.handler
    def add(self, a: int, b: int = 2) -> int:
        """Add two numbers."""
        return a + b

    @lp.handler
    def count(self, n: int) -> Iterator[dict[str, int]]:
        yield from ({"i": i} for i in range(n))


def test_client_routes_come_from_openapi_and_post_json():
    doc = openapi("Demo", _Demo.routes())
    seen: list[tuple[str, str, Any]] = []
    types: list[str] = []

    def responder(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else None
        seen.append((request.method, request.url.path, body))
        if request.method == "POST":  # a service takes JSON only as application/json
            types.append(request.headers.get("content-type", ""))
        if request.url.path == "/openapi.json":
            return httpx.Response(200, json=doc)
        if request.url.path == "/add":
            return httpx.Response(200, json=body["a"] + body.get("b", 2))
        if request.url.path == "/count":
            lines = "".join(json.dumps({"i": i}) + "\n" for i in range(body["n"]))
            return httpx.Response(200, text=lines, headers={"content-type": "application/x-ndjson"})
        return httpx.Response(404, json={"error": {"code": "not_found", "message": "no"}})

    with _mock_client(responder) as client:
        assert set(client.routes) == {"add", "count"}
        assert not client.routes["add"].stream
        assert client.routes["count"].stream
        assert client.add(a=1, b=5) == 6
        assert client.add({"a": 1}) == 3
        assert list(client.count(n=3)) == [{"i": 0}, {"i": 1}, {"i": 2}]
        with pytest.raises(AttributeError, match="has no route 'nope'"):
            client.nope  # noqa: B018
        with pytest.raises(RequestError, match="either one body or keyword"):
            client.add({"a": 1}, b=2)
    assert ("POST", "/add", {"a": 1, "b": 5}) in seen
    assert len(types) >= 3
    assert set(types) == {"application/json"}
    assert sum(1 for s in seen if s[1] == "/openapi.json") == 1  # fetched once


def test_client_retries_503_then_raises_mapped_errors():
    answers = iter(
        [
            httpx.Response(
                503,
                headers={"retry-after": "0"},
                json={"error": {"code": "overloaded", "message": "m"}},
            ),
            httpx.Response(200, json=7),
        ]
    )
    with _mock_client(lambda request: next(answers)) as client:
        assert client.request("POST", "/add", json={"a": 5}) == 7

    calls = []

    def always_busy(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return httpx.Response(
            503,
            headers={"retry-after": "0"},
            json={"error": {"code": "overloaded", "message": "busy"}},
        )

    with _mock_client(always_busy) as client, pytest.raises(OverloadedError, match="busy"):
        client.request("GET", "/x")
    assert len(calls) == 3  # one attempt and two retries

    def unauthorized(request: httpx.Request) -> httpx.Response:
        calls.append(2)
        return httpx.Response(401, json={"error": {"code": "unauthorized", "message": "token"}})

    calls.clear()
    with _mock_client(unauthorized) as client, pytest.raises(UnauthorizedError):
        client.request("GET", "/x")
    assert calls == [2]  # a 401 is not retried


def test_client_stream_error_line_raises():
    def responder(request: httpx.Request) -> httpx.Response:
        text = '{"i": 0}\n{"error": {"code": "internal_error", "message": "boom"}}\n'
        return httpx.Response(200, text=text, headers={"content-type": "application/x-ndjson"})

    with _mock_client(responder) as client:
        items = client._stream("/count", {"n": 2})
        assert next(items) == {"i": 0}
        with pytest.raises(ServingError, match="boom"):
            next(items)


def test_client_sends_the_bearer_token():
    client = lp.Client("http://svc/", token="s3cret")
    try:
        assert client.url == "http://svc"
        assert client._http.headers["authorization"] == "Bearer s3cret"
    finally:
        client.close()
