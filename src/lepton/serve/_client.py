"""``lp.Client``: call a Lepton service from Python, with retries and timeouts.

Routes become methods (read from the service's OpenAPI document on first use)::

    client = lp.Client("http://127.0.0.1:8100", token=...)
    client.predict(image=Path("digit.png"))      # {"label": 7, "score": 0.99, ...}
    for token in client.generate(prompt="hi"):  # streaming routes yield items
        ...
"""

from __future__ import annotations

import base64
import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from lepton._wire import error_from_answer
from lepton.errors import (
    DeadlineExceededError,
    LeptonError,
    OverloadedError,
    RequestError,
    ServingError,
)

__all__ = ["Client"]

_RETRY_STATUS = frozenset({429, 503})


class _Route:
    def __init__(self, client: Client, method: str, path: str, stream: bool) -> None:
        self.client, self.method, self.path, self.stream = client, method, path, stream

    def __call__(self, body: Any = None, /, **fields: Any) -> Any:
        if body is not None and fields:
            raise RequestError("pass either one body or keyword fields, not both")
        payload = _jsonable(body if body is not None else fields)
        if self.stream:
            return self.client._stream(self.path, payload)
        return self.client.request(
            self.method, self.path, json=payload if self.method == "POST" else None
        )

    def __repr__(self) -> str:
        return f"<route {self.method} {self.path}{' (stream)' if self.stream else ''}>"


def _jsonable(value: Any) -> Any:
    # Paths and bytes (images) travel as base64; tensors and arrays as nested lists.
    if isinstance(value, Path):
        return base64.b64encode(value.read_bytes()).decode("ascii")
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if hasattr(value, "tolist") and callable(value.tolist):
        return value.tolist()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


class Client:
    """A client of one service.

    Args:
        url: The service's base URL, e.g. ``"http://127.0.0.1:8100"``.
        token: Bearer token, when the service requires one.
        timeout: Seconds for each attempt (connect, read, write).
        retries: Extra attempts after a 429/503 answer or a refused connection; waits
            follow ``Retry-After`` when given, else an exponential backoff.
        backoff: The first backoff wait in seconds (doubles each retry, capped at 5 s).

    Raises (from calls):
        ServingError: Its subclass matches the HTTP status (``OverloadedError`` for 503,
            ``DeadlineExceededError`` for 504, ...); ``code`` is the server's error code.
    """

    def __init__(
        self, url: str, *, token: str | None = None, timeout: float = 30.0, retries: int = 3,
        backoff: float = 0.1,
    ) -> None:  # fmt: skip
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout)
        self.url = url.rstrip("/")
        self.retries = retries
        self.backoff = backoff
        self._routes: dict[str, _Route] | None = None

    # -- routes as methods -------------------------------------------------------------

    @property
    def routes(self) -> dict[str, _Route]:
        """The service's routes by operation name (fetched once from ``/openapi.json``)."""
        if self._routes is None:
            doc = self.request("GET", "/openapi.json")
            routes: dict[str, _Route] = {}
            for path, ops in doc.get("paths", {}).items():
                for method, op in ops.items():
                    name = op.get("operationId")
                    if name:
                        content = op.get("responses", {}).get("200", {}).get("content", {})
                        stream = bool({"text/plain", "application/x-ndjson"} & set(content))
                        routes[name] = _Route(self, method.upper(), path, stream)
            self._routes = routes
        return self._routes

    def __getattr__(self, name: str) -> _Route:
        if name.startswith("_"):
            raise AttributeError(name)
        routes = self.routes
        if name not in routes:
            raise AttributeError(
                f"the service at {self.url} has no route {name!r}; it has: {', '.join(routes)}"
            )
        return routes[name]

    # -- built-ins ---------------------------------------------------------------------

    def healthy(self) -> bool:
        """Whether ``/healthz`` answers 200."""
        try:
            return self._http.get("/healthz").status_code == 200
        except httpx.HTTPError:
            return False

    def ready(self) -> bool:
        """Whether ``/readyz`` answers 200 (loaded and not draining)."""
        try:
            return self._http.get("/readyz").status_code == 200
        except httpx.HTTPError:
            return False

    def metrics(self) -> str:
        """The Prometheus text of ``/metrics``."""
        return str(self.request("GET", "/metrics", raw=True))

    # -- transport ---------------------------------------------------------------------

    def request(self, method: str, path: str, *, json: Any = None, content: bytes | None = None,
                headers: dict[str, str] | None = None, raw: bool = False) -> Any:  # fmt: skip
        """Send one request, retrying 429/503 and refused connections; returns JSON."""
        attempt = 0
        while True:
            try:
                response = self._http.request(method, path, json=json, content=content,
                                              headers=headers)  # fmt: skip
            except httpx.ConnectError as exc:
                if attempt >= self.retries:
                    raise OverloadedError(f"cannot connect to {self.url} ({exc})") from None
                self._sleep(attempt, None)
                attempt += 1
                continue
            except httpx.TimeoutException:
                raise DeadlineExceededError(
                    f"{method} {path} got no answer within the client timeout"
                ) from None
            if response.status_code in _RETRY_STATUS and attempt < self.retries:
                self._sleep(attempt, response.headers.get("retry-after"))
                attempt += 1
                continue
            if response.status_code >= 400:
                raise _error(response)
            return response.text if raw else response.json()

    def _sleep(self, attempt: int, retry_after: str | None) -> None:
        wait = min(5.0, self.backoff * 2**attempt)
        if retry_after is not None:
            with contextlib.suppress(ValueError):
                wait = min(30.0, float(retry_after))
        time.sleep(wait)

    def _stream(self, path: str, payload: Any) -> Iterator[Any]:
        with self._http.stream("POST", path, json=payload) as response:
            if response.status_code >= 400:
                response.read()
                raise _error(response)
            if response.headers.get("content-type", "").startswith("text/plain"):
                yield from response.iter_text()
                return
            for line in response.iter_lines():
                if not line:
                    continue
                item = json.loads(line)
                if isinstance(item, dict) and set(item) == {"error"}:
                    raise ServingError(item["error"].get("message", "the stream failed"))
                yield item

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _error(response: httpx.Response) -> LeptonError:
    return error_from_answer(
        response.status_code, response.text, answered_by=ServingError,
        reason=response.reason_phrase,
    )  # fmt: skip
