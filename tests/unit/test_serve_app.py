"""The ASGI app of an ``lp.Service``, driven in-process through ``httpx.ASGITransport``.

Request bodies, routing errors, limits, auth, deadlines, overload, draining, streaming,
OpenAPI and metrics. No sockets, no subprocesses.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import pickle
import struct
import threading
import time
import zlib
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import BaseModel

import lepton as lp
from helpers import run_app
from lepton.errors import RequestError, ShapeError
from lepton.serve import Service

Scenario = Callable[[httpx.AsyncClient, Any], Awaitable[Any]]


@pytest.fixture(autouse=True)
def _single_process_metrics(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)


def png_bytes(width: int = 6, height: int = 4, color: Any = (255, 0, 0)) -> bytes:
    from PIL import Image as PILImage

    buffer = io.BytesIO()
    PILImage.new("RGB", (width, height), color).save(buffer, format="PNG")
    return buffer.getvalue()


def error_of(response: httpx.Response) -> dict[str, Any]:
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}
    assert {"code", "message"} <= set(body["error"])
    return body["error"]


# -- a service exercising the request body ------------------------------------------------


class Point(BaseModel):
    x: float
    y: float


class Shape(BaseModel):
    name: str
    points: list[Point]


class Bodies(Service):
    @lp.handler
    def add(self, a: int, b: int = 2) -> int:
        """Add two integers."""
        return a + b

    @lp.handler
    def norm(self, p: Point) -> float:
        return (p.x**2 + p.y**2) ** 0.5

    @lp.handler
    def describe(self, shape: Shape, scale: float = 1.0) -> dict[str, Any]:
        return {"name": shape.name, "n": len(shape.points), "scale": scale}

    @lp.handler
    def size(self, image: lp.Image, scale: int = 1) -> list[int]:
        width, height = image.size
        return [width * scale, height * scale]

    @lp.handler
    def pair(self, left: lp.Image, right: lp.Image) -> int:
        return left.size[0] + right.size[0]

    @lp.handler
    def predict(self, inputs: lp.Tensor) -> lp.Prediction:
        return lp.Prediction(label=int(inputs.sum()), values=inputs.reshape(-1).tolist())

    @lp.handler
    def double(self, inputs: lp.Tensor) -> lp.Tensor:
        return inputs * 2


def test_json_body_has_one_field_per_parameter():
    async def scenario(client: httpx.AsyncClient, app: Any) -> None:
        r = await client.post("/add", json={"a": 1})
        assert (r.status_code, r.json()) == (200, 3)
        r = await client.post("/add", json={"a": 1, "b": 5})
        assert (r.status_code, r.json()) == (200, 6)
        r = await client.post(
            "/describe", json={"shape": {"name": "tri", "points": [{"x": 0, "y": 1}]}}
        )
        assert r.json() == {"name": "tri", "n": 1, "scale": 1.0}
        # JSON only as JSON: a form (curl -d, or a cross-site web form) or no type is 415
        for kind in ("application/x-www-form-urlencoded", "text/plain", None):
            headers = {"content-type": kind} if kind else {}
            r = await client.post("/add", content=b'{"a": 4}', headers=headers)
            assert r.status_code == 415, kind
            error = error_of(r)
            assert error["code"] == "unsupported_media_type"
            assert "Content-Type: application/json" in error["message"]
        r = await client.post(
            "/add", content=b'{"a": 4}', headers={"content-type": "Application/JSON; charset=utf-8"}
        )
        assert (r.status_code, r.json()) == (200, 6)
        r = await client.post(
            "/add", content=b'{"a": 4}', headers={"content-type": "application/vnd.x+json"}
        )
        assert (r.status_code, r.json()) == (200, 6)

    run_app(Bodies(), scenario)


def test_single_pydantic_parameter_is_the_body_itself():
    async def scenario(client: httpx.AsyncClient, app: Any) -> None:
        r = await client.post("/norm", json={"x": 3, "y": 4})
        assert (r.status_code, r.json()) == (200, 5.0)
        r = await client.post("/norm", json={"p": {"x": 3, "y": 4}})
        assert r.status_code == 422
        locs = [d["loc"] for d in error_of(r)["details"]]
        assert ["x"] in locs
        assert ["y"] in locs

    run_app(Bodies(), scenario)


def test_extra_and_invalid_fields_are_422_with_details():
    async def scenario(client: httpx.AsyncClient, app: Any) -> None:
        r = await client.post("/add", json={"a": 1, "c": 3})
        assert r.status_code == 422
        error = error_of(r)
        assert error["code"] == "validation_error"
        assert error["message"].startswith("invalid request: c:")
        assert error["details"] == [
            {"loc": ["c"], "msg": "Extra inputs are not permitted", "type": "extra_forbidden"}
        ]
        r = await client.post("/add", json={"a": "one", "zz": 1})
        error = error_of(r)
        assert r.status_code == 422
        assert {tuple(d["loc"]) for d in error["details"]} == {("a",), ("zz",)}
        assert "(and 1 more)" in error["message"]
        r = await client.post("/add", json={})
        assert r.status_code == 422
        assert error_of(r)["details"][0]["type"] == "missing"
        r = await client.post(
            "/add", content=b"{not json", headers={"content-type": "application/json"}
        )
        assert r.status_code == 422
        assert error_of(r)["details"][0]["type"] == "json_invalid"

    run_app(Bodies(), scenario)


def test_empty_body_is_400_and_bad_content_type_is_415():
    async def scenario(client: httpx.AsyncClient, app: Any) -> None:
        r = await client.post("/add")
        assert r.status_code == 400
        error = error_of(r)
        assert error["code"] == "bad_request"
        assert '{"a": ..., "b": ...}' in error["message"]
        r = await client.post("/add", content=b"a=1", headers={"content-type": "text/csv"})
        assert r.status_code == 415
        assert "unsupported Content-Type 'text/csv'" in error_of(r)["message"]
        # a raw image body fits only a handler with exactly one image field
        for path in ("/add", "/pair"):
            r = await client.post(path, content=png_bytes(), headers={"content-type": "image/png"})
            assert r.status_code == 400, path
            assert "exactly one image field" in error_of(r)["message"]
        r = await client.post(
            "/size", content=b"--x--", headers={"content-type": "multipart/form-data"}
        )
        assert r.status_code == 400
        assert "boundary" in error_of(r)["message"]

    run_app(Bodies(), scenario)


def test_multipart_upload_of_a_png_into_an_image_parameter():
    async def scenario(client: httpx.AsyncClient, app: Any) -> None:
        files = {"image": ("digit.png", png_bytes(7, 3), "image/png")}
        r = await client.post("/size", files=files, data={"scale": "2"})
        assert (r.status_code, r.json()) == (200, [14, 6])
        r = await client.post("/size", files={"image": ("d.png", png_bytes(5, 5), "image/png")})
        assert (r.status_code, r.json()) == (200, [5, 5])
        both = {
            "left": ("l.png", png_bytes(2, 2), "image/png"),
            "right": ("r.png", png_bytes(3, 2), "image/png"),
        }
        r = await client.post("/pair", files=both)
        assert (r.status_code, r.json()) == (200, 5)
        # nested non-image form fields may be JSON text
        fields = {"shape": (None, '{"name": "sq", "points": []}'), "scale": (None, "3")}
        r = await client.post("/describe", files=fields)
        assert r.request.headers["content-type"].startswith("multipart/form-data")
        assert (r.status_code, r.json()) == (200, {"name": "sq", "n": 0, "scale": 3.0})
        r = await client.post(
            "/size", files={"image": ("x.png", png_bytes(), "image/png")}, data={"extra": "1"}
        )
        assert r.status_code == 422
        assert error_of(r)["details"][0]["loc"] == ["extra"]

    run_app(Bodies(), scenario)


def test_raw_image_body_and_base64_images_in_json():
    data = png_bytes(9, 4)
    b64 = base64.b64encode(data).decode()

    async def scenario(client: httpx.AsyncClient, app: Any) -> None:
        for content_type in ("image/png", "application/octet-stream"):
            r = await client.post("/size", content=data, headers={"content-type": content_type})
            assert (r.status_code, r.json()) == (200, [9, 4]), content_type
        r = await client.post("/size", json={"image": b64, "scale": 3})
        assert (r.status_code, r.json()) == (200, [27, 12])
        r = await client.post("/size", json={"image": f"data:image/png;base64,{b64}"})
        assert (r.status_code, r.json()) == (200, [9, 4])
        r = await client.post("/size", json={"image": "%%% not base64"})
        assert r.status_code == 422
        assert "base64" in error_of(r)["message"]

    run_app(Bodies(), scenario)


UNPICKLED: list[str] = []


def _record_unpickling(tag: str) -> str:
    UNPICKLED.append(tag)
    return tag


class _Bomb:
    def __reduce__(self) -> tuple[Any, ...]:
        return (_record_unpickling, ("unpickled!",))


def test_a_pickle_sent_as_an_image_is_refused_and_never_unpickled(monkeypatch: pytest.MonkeyPatch):
    payload = pickle.dumps(_Bomb(), protocol=4)
    assert payload.startswith(b"\x80\x04")

    def forbidden(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("pickle must never be used on request bodies")

    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(pickle, "load", forbidden)
    UNPICKLED.clear()

    async def scenario(client: httpx.AsyncClient, app: Any) -> None:
        attempts = [
            client.post("/size", content=payload, headers={"content-type": "image/png"}),
            client.post(
                "/size", content=payload, headers={"content-type": "application/octet-stream"}
            ),
            client.post("/size", files={"image": ("x.png", payload, "image/png")}),
            client.post("/size", json={"image": base64.b64encode(payload).decode()}),
        ]
        for attempt in attempts:
            r = await attempt
            assert r.status_code == 422
            error = error_of(r)
            assert error["code"] == "validation_error"
            assert "not a PNG or JPEG" in error["message"]

    run_app(Bodies(), scenario)
    assert UNPICKLED == []


def test_an_image_over_the_pixel_limit_is_422(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr("lepton.serve._types.MAX_IMAGE_PIXELS", 64)

    async def scenario(client: httpx.AsyncClient, app: Any) -> None:
        r = await client.post(
            "/size", content=png_bytes(8, 8), headers={"content-type": "image/png"}
        )
        assert (r.status_code, r.json()) == (200, [8, 8])
        r = await client.post(
            "/size", content=png_bytes(9, 8), headers={"content-type": "image/png"}
        )
        assert r.status_code == 422
        assert "over the limit of 64" in error_of(r)["message"]

    run_app(Bodies(), scenario)


def _png_header_only(width: int, height: int) -> bytes:
    """A tiny PNG file that declares a huge canvas (a decompression bomb's header)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def test_a_decompression_bomb_header_is_422_not_500():
    bomb = _png_header_only(20_000, 20_000)  # 400 Mpx in < 100 bytes
    assert len(bomb) < 200

    async def scenario(client: httpx.AsyncClient, app: Any) -> None:
        r = await client.post("/size", content=bomb, headers={"content-type": "image/png"})
        assert r.status_code == 422, r.text
        assert "over the limit" in error_of(r)["message"]

    run_app(Bodies(), scenario)


def test_tensor_and_prediction_bodies():
    async def scenario(client: httpx.AsyncClient, app: Any) -> None:
        r = await client.post("/predict", json={"inputs": [[1, 2], [3, 4]]})
        assert r.status_code == 200
        assert r.json() == {
            "label": 10,
            "score": None,
            "probabilities": None,
            "values": [1.0, 2.0, 3.0, 4.0],
        }
        r = await client.post("/double", json={"inputs": [0.5, 1.5]})
        assert (r.status_code, r.json()) == (200, [1.0, 3.0])
        r = await client.post("/double", json={"inputs": [[1, 2], [3]]})
        assert r.status_code == 422
        assert error_of(r)["details"][0]["loc"] == ["inputs"]

    run_app(Bodies(), scenario)


# -- routing, limits, auth -----------------------------------------------------------------


def test_unknown_path_is_404_and_wrong_method_is_405():
    async def scenario(client: httpx.AsyncClient, app: Any) -> None:
        r = await client.post("/nope", json={})
        assert r.status_code == 404
        error = error_of(r)
        assert error["code"] == "not_found"
        assert "GET / lists the routes" in error["message"]
        r = await client.get("/add")
        assert r.status_code == 405
        assert error_of(r)["code"] == "method_not_allowed"
        r = await client.post("/healthz")
        assert r.status_code == 405
        assert error_of(r)["code"] == "method_not_allowed"

    run_app(Bodies(), scenario)


def test_body_over_the_limit_is_413_by_content_length_and_when_streamed():
    async def chunked(total: int) -> AsyncIterator[bytes]:
        yield b'{"a": 1, "pad": "'
        for _ in range(total // 100):
            yield b"x" * 100
        yield b'"}'

    async def scenario(client: httpx.AsyncClient, app: Any) -> None:
        r = await client.post("/add", json={"a": 1})
        assert r.status_code == 200
        r = await client.post(
            "/add", content=b" " * 1001, headers={"content-type": "application/json"}
        )
        assert r.status_code == 413
        error = error_of(r)
        assert error["code"] == "payload_too_large"
        assert "1,001 bytes" in error["message"]
        assert "1,000" in error["message"]
        # exactly at the limit is fine (and then the JSON decides)
        padded = b'{"a": 2}' + b" " * (1000 - 8)
        r = await client.post("/add", content=padded, headers={"content-type": "application/json"})
        assert (r.status_code, r.json()) == (200, 4)
        # chunked: no Content-Length, the body is counted as it arrives
        r = await client.post(
            "/add", content=chunked(5000), headers={"content-type": "application/json"}
        )
        assert "content-length" not in r.request.headers
        assert r.status_code == 413
        assert error_of(r)["code"] == "payload_too_large"
        r = await client.post("/add", content=b'{"a": 1}', headers={"content-length": "ten"})
        assert r.status_code == 400

    run_app(Bodies(), scenario, max_body_bytes=1000)


def test_bearer_token_guards_routes_but_not_probes():
    async def scenario(client: httpx.AsyncClient, app: Any) -> None:
        good = {"authorization": "Bearer s3cret"}
        for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": "Basic s3cret"},
                        {"authorization": "s3cret"}):  # fmt: skip
            r = await client.post("/add", json={"a": 1}, headers=headers)
            assert r.status_code == 401, headers
            error = error_of(r)
            assert error["code"] == "unauthorized"
            assert "Authorization: Bearer" in error["message"]
        r = await client.post("/add", json={"a": 1}, headers=good)
        assert (r.status_code, r.json()) == (200, 3)
        r = await client.post("/add", json={"a": 1}, headers={"authorization": "bearer s3cret"})
        assert r.status_code == 200
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.get("/readyz")).status_code == 200
        for path in ("/metrics", "/openapi.json", "/"):
            assert (await client.get(path)).status_code == 401, path
            assert (await client.get(path, headers=good)).status_code == 200, path

    run_app(Bodies(), scenario, token="s3cret")


# -- handler behaviour ----------------------------------------------------------------------


class Behaviours(Service):
    def setup(self) -> None:
        self.release = threading.Event()
        self.finished = 0  # slow calls that ran to their end

    @lp.handler(timeout_s=0.2)
    def slow_sync(self, seconds: float) -> str:
        self.release.wait(seconds)
        self.finished += seconds > 0
        return "done"

    @lp.handler(timeout_s=0.2)
    async def slow_async(self, seconds: float) -> str:
        await asyncio.sleep(seconds)
        self.finished += seconds > 0
        return "done"

    @lp.handler(timeout_s=30)
    async def patient(self, seconds: float) -> str:
        await asyncio.sleep(seconds)
        self.finished += seconds > 0
        return "done"

    @lp.handler
    def crash(self, x: int) -> int:
        raise RuntimeError("secret internal detail 1234")

    @lp.handler
    def reject(self, x: int) -> int:
        raise RequestError(f"x={x} is not allowed; send x < 0")

    @lp.handler
    def bad_shape(self, x: int) -> int:
        raise ShapeError("inputs of shape [3] expected")

    @lp.handler
    def inner_validation(self, x: int) -> lp.Prediction:
        return lp.Prediction(score="not a number")  # a bug in the handler, not in the request

    @lp.handler
    async def async_add(self, a: int, b: int) -> int:
        await asyncio.sleep(0)
        return a + b

    @lp.handler(method="GET")
    def version(self) -> dict[str, str]:
        """The service's version."""
        return {"version": "1.2.3"}

    @lp.handler
    def count(self, n: int) -> Iterator[dict[str, int]]:
        for i in range(n):
            yield {"i": i}

    @lp.handler
    async def acount(self, n: int) -> AsyncIterator[int]:
        for i in range(n):
            await asyncio.sleep(0)
            yield i

    @lp.handler
    def words(self, text: str) -> Iterator[str]:
        for word in text.split():
            yield word + " "

    @lp.handler
    def broken_stream(self, n: int) -> Iterator[int]:
        yield 1
        raise RequestError("the stream stopped")


@pytest.mark.parametrize("path", ["/slow_sync", "/slow_async"])
def test_handler_past_its_timeout_is_504(path):
    async def scenario(client: httpx.AsyncClient, app: Any) -> None:
        r = await client.post(path, json={"seconds": 1.0})
        finished_when_answered = app.service.finished
        app.service.release.set()
        assert r.status_code == 504
        error = error_of(r)
        assert error["code"] == "deadline_exceeded"
        assert finished_when_answered == 0, "the 504 waited for the handler to finish"
        r = await client.post(path, json={"seconds": 0.0})
        assert (r.status_code, r.json()) == (200, "done")

    run_app(Behaviours(), scenario)


def test_request_timeout_header_lowers_the_deadline():
    async def scenario(client: httpx.AsyncClient, app: Any) -> None:
        r = await client.post(
            "/patient", json={"seconds": 2.0}, headers={"x-request-timeout": "0.1"}
        )
        assert r.status_code == 504  # the handler's own 30 s would have let it finish
        assert error_of(r)["code"] == "deadline_exceeded"
        # it cannot raise the handler's own deadline (0.2 s < the 2 s the call takes)
        r = await client.post(
            "/slow_async", json={"seconds": 2.0}, headers={"x-request-timeout": "60"}
        )
        assert r.status_code == 504
        assert app.service.finished == 0, "a 504 waited for its handler"
        for bad in ("soon", "0", "-1", "nan"):
            r = await client.post(
                "/patient", json={"seconds": 0}, headers={"x-request-timeout": bad}
            )
            assert r.status_code == 400, bad
            error = error_of(r)
            assert error["code"] == "bad_request"
            assert "X-Request-Timeout" in error["message"]
        r = await client.post("/patient", json={"seconds": 0}, headers={"x-request-timeout": "5"})
        assert r.status_code == 200

    run_app(Behaviours(), scenario)


def test_plain_exception_is_500_without_a_traceback(caplog: pytest.LogCaptureFixture):
    async def scenario(client: httpx.AsyncClient, app: Any) -> None:
        with caplog.at_level(logging.ERROR, logger="lepton.serve"):
            r = await client.post("/crash", json={"x": 1})
        assert r.status_code == 500
        error = error_of(r)
        assert error["code"] == "internal_error"
        assert "secret internal detail" not in r.text
        assert "Traceback" not in r.text
        assert "RuntimeError" not in r.text

    run_app(Behaviours(), scenario)
    assert "secret internal detail 1234" in caplog.text  # the server log has it


def test_request_error_from_a_handler_is_400_with_its_message():
    async def scenario(client: httpx.AsyncClient, app: Any) -> None:
        r = await client.post("/reject", json={"x": 5})
        assert r.status_code == 400
        assert error_of(r) == {"code": "bad_request", "message": "x=5 is not allowed; send x < 0"}
        r = await client.post("/bad_shape", json={"x": 5})
        assert r.status_code == 422
        assert error_of(r)["code"] == "invalid_shape"

    run_app(Behaviours(), scenario)


def test_validation_error_inside_a_handler_is_500_not_422():
    async def scenario(client: httpx.AsyncClient, app: Any) -> None:
        r = await client.post("/inner_validation", json={"x": 1})
        assert r.status_code == 500, r.text
        assert error_of(r)["code"] == "internal_error"

    run_app(Behaviours(), scenario)


def test_async_and_get_handlers():
    async def scenario(client: httpx.AsyncClient, app: Any) -> None:
        results = await asyncio.gather(
            *[client.post("/async_add", json={"a": i, "b": 1}) for i in range(10)]
        )
        assert [r.json() for r in results] == [i + 1 for i in range(10)]
        r = await client.get("/version")
        assert (r.status_code, r.json()) == (200, {"version": "1.2.3"})
        r = await client.post("/version")
        assert r.status_code == 405

    run_app(Behaviours(), scenario)


def test_streaming_handlers_answer_ndjson_and_text():
    async def scenario(client: httpx.AsyncClient, app: Any) -> None:
        r = await client.post("/count", json={"n": 3})
        assert r.status_code == 200
        assert r.headers["content-type"] == "application/x-ndjson"
        assert r.text.endswith("\n")
        assert [json.loads(line) for line in r.text.splitlines()] == [{"i": 0}, {"i": 1}, {"i": 2}]
        r = await client.post("/acount", json={"n": 4})
        assert [json.loads(line) for line in r.text.splitlines()] == [0, 1, 2, 3]
        r = await client.post("/count", json={"n": 0})
        assert (r.status_code, r.text) == (200, "")
        r = await client.post("/words", json={"text": "hello streaming world"})
        assert r.headers["content-type"].startswith("text/plain")
        assert r.text == "hello streaming world "
        # an error after the first item is reported in-band as the last line
        r = await client.post("/broken_stream", json={"n": 1})
        lines = [json.loads(line) for line in r.text.splitlines()]
        assert lines == [1, {"error": {"code": "bad_request", "message": "the stream stopped"}}]
        r = await client.post("/count", json={"n": "many"})
        assert r.status_code == 422

    run_app(Behaviours(), scenario)


# -- overload and draining ----------------------------------------------------------------


class Busy(Service):
    @lp.handler(workers=1, max_queue=1)
    def work(self, seconds: float) -> str:
        time.sleep(seconds)
        return "ok"


def test_overload_answers_503_with_retry_after_while_healthz_stays_fast():
    async def scenario(client: httpx.AsyncClient, app: Any) -> None:
        async def healthz_during_burst() -> float:
            await asyncio.sleep(0.05)
            started = time.perf_counter()
            r = await client.get("/healthz")
            assert (r.status_code, r.json()) == (200, {"status": "ok"})
            return time.perf_counter() - started

        *responses, health_s = await asyncio.gather(
            *[client.post("/work", json={"seconds": 0.25}) for _ in range(6)],
            healthz_during_burst(),
        )
        statuses = Counter(r.status_code for r in responses)
        assert statuses == {200: 2, 503: 4}  # one running, one waiting (max_queue=1)
        for r in responses:
            if r.status_code == 503:
                assert r.headers["retry-after"] == "1"
                assert error_of(r)["code"] == "overloaded"
            else:
                assert r.json() == "ok"
        assert health_s < 0.15  # not queued behind the 0.25 s handlers
        r = await client.post("/work", json={"seconds": 0})
        assert r.status_code == 200  # recovered once the burst is served

    run_app(Busy(), scenario)


def test_drain_fails_readiness_and_refuses_new_work():
    async def scenario(client: httpx.AsyncClient, app: Any) -> None:
        r = await client.get("/readyz")
        assert (r.status_code, r.json()) == (200, {"status": "ready"})
        app.drain()
        r = await client.get("/readyz")
        assert (r.status_code, r.json()) == (503, {"status": "draining"})
        r = await client.post("/add", json={"a": 1})
        assert r.status_code == 503
        assert error_of(r)["code"] == "overloaded"
        assert r.headers["retry-after"] == "1"
        assert r.headers["connection"] == "close"
        r = await client.get("/healthz")
        assert r.status_code == 200

    run_app(Bodies(), scenario)


def test_lifespan_startup_and_shutdown():
    async def main() -> list[dict[str, Any]]:
        app = Bodies().asgi()
        inbox = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return inbox.pop(0)

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await asyncio.wait_for(app({"type": "lifespan"}, receive, send), 5)
        return sent

    assert asyncio.run(main()) == [
        {"type": "lifespan.startup.complete"},
        {"type": "lifespan.shutdown.complete"},
    ]


# -- OpenAPI and the index ------------------------------------------------------------------


def test_openapi_document_describes_every_handler():
    async def scenario(client: httpx.AsyncClient, app: Any) -> dict[str, Any]:
        r = await client.get("/openapi.json")
        assert r.status_code == 200
        return r.json()

    doc = run_app(Bodies(), scenario)
    assert doc["openapi"].startswith("3.")
    assert doc["info"]["title"] == "Bodies"
    paths = doc["paths"]
    operations = {op["operationId"]: (path, method, op) for path, ops in paths.items()
                  for method, op in ops.items() if "operationId" in op}  # fmt: skip
    assert set(operations) == {"add", "norm", "describe", "size", "pair", "predict", "double"}
    assert {"/healthz", "/readyz", "/metrics"} <= set(paths)
    schemas = doc["components"]["schemas"]

    def resolve(schema: dict[str, Any]) -> dict[str, Any]:
        if "$ref" in schema:
            prefix = "#/components/schemas/"
            assert schema["$ref"].startswith(prefix)
            return schemas[schema["$ref"][len(prefix) :]]
        return schema

    path, method, add = operations["add"]
    assert (path, method) == ("/add", "post")
    assert add["summary"] == "Add two integers."
    body = resolve(add["requestBody"]["content"]["application/json"]["schema"])
    assert set(body["properties"]) == {"a", "b"}
    assert body["required"] == ["a"]
    assert body["properties"]["a"]["type"] == "integer"
    assert body.get("additionalProperties") is False
    assert add["responses"]["200"]["content"]["application/json"]["schema"] == {"type": "integer"}
    assert {"200", "401", "413", "422", "503", "504"} <= set(add["responses"])

    # a single pydantic parameter: the body is that model, kept in components
    norm = operations["norm"][2]
    assert set(
        resolve(norm["requestBody"]["content"]["application/json"]["schema"])["properties"]
    ) == {"x", "y"}
    assert "Point" in schemas
    # nested models are referenced from components
    describe = resolve(
        operations["describe"][2]["requestBody"]["content"]["application/json"]["schema"]
    )
    assert set(describe["properties"]) == {"shape", "scale"}
    assert "Shape" in schemas
    assert set(schemas["Shape"]["properties"]) == {"name", "points"}
    # image handlers also take uploads and raw bytes
    size = operations["size"][2]["requestBody"]["content"]
    assert {"application/json", "multipart/form-data", "image/png", "image/jpeg"} <= set(size)
    assert "image/png" not in operations["pair"][2]["requestBody"]["content"]
    # the response model is in components
    ok = operations["predict"][2]["responses"]["200"]["content"]["application/json"]["schema"]
    assert set(resolve(ok)["properties"]) == {"label", "score", "probabilities", "values"}
    assert "Error" in schemas


def test_openapi_marks_streams_batches_and_get_routes():
    async def scenario(client: httpx.AsyncClient, app: Any) -> dict[str, Any]:
        return (await client.get("/openapi.json")).json()

    doc = run_app(Behaviours(), scenario)
    assert "application/x-ndjson" in doc["paths"]["/count"]["post"]["responses"]["200"]["content"]
    assert "text/plain" in doc["paths"]["/words"]["post"]["responses"]["200"]["content"]
    version = doc["paths"]["/version"]["get"]
    assert "requestBody" not in version
    assert version["summary"] == "The service's version."


def test_index_lists_the_routes():
    async def scenario(client: httpx.AsyncClient, app: Any) -> dict[str, Any]:
        r = await client.get("/")
        assert r.status_code == 200
        return r.json()

    index = run_app(Behaviours(), scenario)
    assert index["service"] == "Behaviours"
    assert index["openapi"] == "/openapi.json"
    routes = {(r["method"], r["path"]): r for r in index["routes"]}
    assert ("GET", "/version") in routes
    assert ("POST", "/async_add") in routes
    assert routes[("POST", "/count")]["stream"] is True
    assert routes[("POST", "/async_add")]["stream"] is False
    assert len(routes) == len(Behaviours.routes())


# -- metrics ----------------------------------------------------------------------------------


def parse_metrics(text: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def test_metrics_count_requests_statuses_latency_and_errors():
    async def scenario(client: httpx.AsyncClient, app: Any) -> str:
        for a in range(3):
            assert (await client.post("/add", json={"a": a})).status_code == 200
        assert (await client.post("/add", json={"a": "x"})).status_code == 422
        assert (await client.post("/add", json={"a": 1, "q": 1})).status_code == 422
        assert (await client.post("/add")).status_code == 400
        assert (await client.post("/norm", json={"x": 1, "y": 0})).status_code == 200
        assert (await client.get("/nowhere")).status_code == 404
        assert (await client.get("/healthz")).status_code == 200
        r = await client.get("/metrics")
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/plain")
        return r.text

    metrics = parse_metrics(run_app(Bodies(), scenario))
    requests = metrics["lepton_requests_total"]
    assert requests[(("route", "/add"), ("status", "200"))] == 3
    assert requests[(("route", "/add"), ("status", "422"))] == 2
    assert requests[(("route", "/add"), ("status", "400"))] == 1
    assert requests[(("route", "/norm"), ("status", "200"))] == 1
    assert requests[(("route", "other"), ("status", "404"))] == 1  # unknown paths share a label
    assert requests[(("route", "/healthz"), ("status", "200"))] == 1
    assert sum(requests.values()) == 9  # the /metrics request itself is not counted yet
    latency = metrics["lepton_request_duration_seconds_count"]
    assert latency[(("route", "/add"),)] == 6
    assert metrics["lepton_request_duration_seconds_sum"][(("route", "/add"),)] > 0
    buckets = metrics["lepton_request_duration_seconds_bucket"]
    assert buckets[(("le", "+Inf"), ("route", "/add"))] == 6
    errors = metrics["lepton_errors_total"]
    assert errors[(("code", "validation_error"), ("route", "/add"))] == 2
    assert errors[(("code", "bad_request"), ("route", "/add"))] == 1
    assert errors[(("code", "not_found"), ("route", "other"))] == 1
    assert sum(errors.values()) == 4
    assert metrics["lepton_inflight_requests"][()] == 1  # the /metrics request
