"""``POST /predict`` and ``POST /explain`` (and a recommender's ``/recommend`` and
``/similar``) forwarded to a deployment over loopback, with its token.

Deployments listen on loopback and demand their own bearer token, so the platform's
users reach them through :class:`PredictProxy`. A deployment being (re)started, or
replaced for a new replica count, closes its port for a moment: the proxy waits for it
(up to ``wait_s``) instead of failing the request, and retries once a kept-alive
connection that a draining supervisor closed. Every failure is answered as the API's
JSON error, never raised. Each answer's status is kept on the deployment's
:class:`~._runtime.Runtime` (``answers``): the AIOps rules see what clients saw.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

import httpx

from lepton._wire import error_body
from lepton.platform.deployments._runtime import Runtime
from lepton.platform.deployments._specs import base_url

__all__ = ["ROUTES", "PredictProxy"]

#: The deployment routes the platform forwards: all only read the model, so a request
#: may be retried once on a connection a draining supervisor closed. ``recommend`` and
#: ``similar`` are a recommender deployment's (lepton.serve._recommend); ``predict_link``,
#: ``query`` (read-only SPARQL) and ``similar`` a graph embedding's (lepton.serve._graph).
ROUTES = (
    "predict",
    "explain",
    "recommend",
    "similar",
    "predict_link",
    "query",
    "detect",
    "sample",
    "search",
    "chat",
    "generate",
)  # detect: a detector's (lepton.serve._vision); sample: an image generator's
#   (_generate_image); search, chat: a text index's and assistant's (_text); generate: a GPT's
#: Of those, the ones answered as a stream (NDJSON lines sent as they are made), which the
#: platform passes on chunk by chunk (:meth:`PredictProxy.stream`).
STREAMED = frozenset({"chat", "generate"})

Answer = tuple[int, str, bytes]  # status, content type, body
_JSON = "application/json"


def json_error(status: int, code: str, message: str) -> Answer:
    """An error answer of the API's shape (:func:`lepton.errors.error_body`)."""
    return status, "application/json", json.dumps(error_body(code, message)).encode()


class PredictProxy:
    """Forwards predictions to deployments, one connection pool per event loop.

    Args:
        host: The address deployments listen on.
        wait_s: How long a request waits for a deployment being (re)started.
        timeout_s: How long a request waits for an answer.
    """

    def __init__(self, host: str, *, wait_s: float, timeout_s: float) -> None:
        self.host = host
        self.wait_s = wait_s
        self.timeout_s = timeout_s
        # httpx's async pools belong to the loop that made them. Loops of several threads
        # add and remove entries by single dict operations (atomic) over a copy of the
        # keys, so no lock.
        self._clients: dict[asyncio.AbstractEventLoop, httpx.AsyncClient] = {}

    async def forward(
        self, rt: Runtime, body: bytes, content_type: str, route: str = "predict"
    ) -> Answer:
        """Send ``body`` to ``rt``'s ``/predict`` (or ``/explain``: ``route="explain"``).

        Returns:
            The deployment's own answer, or a JSON error: 503 when it is stopped or
            cannot be reached (after up to ``wait_s``), 502 when it broke the
            connection, 504 when it does not answer within ``timeout_s``.
        """
        sent = time.time()
        answer = await self._send(rt, body, content_type, route, stream=False)
        if isinstance(answer, tuple):
            rt.answers.append((sent, answer[0]))
            return answer
        rt.answers.append((sent, answer.status_code))
        return answer.status_code, answer.headers.get("content-type", _JSON), answer.content

    async def stream(
        self, rt: Runtime, body: bytes, content_type: str, route: str
    ) -> tuple[int, str, AsyncIterator[bytes]] | Answer:
        """As :meth:`forward`, but a 200 answer's body comes as its chunks arrive (the
        iterator closes the connection at its end); any other answer comes whole."""
        if route not in STREAMED:
            raise ValueError(f"route {route!r} is not streamed; use forward()")
        sent = time.time()
        answer = await self._send(rt, body, content_type, route, stream=True)
        if isinstance(answer, tuple):
            rt.answers.append((sent, answer[0]))
            return answer
        rt.answers.append((sent, answer.status_code))
        if answer.status_code != 200:
            await answer.aread()
            await answer.aclose()
            return answer.status_code, answer.headers.get("content-type", _JSON), answer.content

        async def chunks() -> AsyncIterator[bytes]:
            try:
                async for chunk in answer.aiter_raw():
                    yield chunk
            except httpx.HTTPError as exc:  # the status is sent: end with an error line
                line = json.dumps(error_body("deployment_error", f"the stream broke ({exc})"))
                yield line.encode() + b"\n"
            finally:
                await answer.aclose()

        return 200, answer.headers.get("content-type", _JSON), chunks()

    async def _send(
        self, rt: Runtime, body: bytes, content_type: str, route: str, *, stream: bool
    ) -> httpx.Response | Answer:
        if route not in ROUTES:
            raise ValueError(f"route must be one of {ROUTES}, not {route!r}")
        name = rt.name
        if rt.desired != "running":
            return json_error(
                503, "deployment_stopped",
                f"deployment {name!r} is stopped; start it (POST /api/v1/deployments/{name}/start)",
            )  # fmt: skip
        client = self._client()
        url = f"{base_url(self.host, rt.port)}/{route}"
        headers = {
            "authorization": f"Bearer {rt.token}",
            "content-type": content_type or "application/octet-stream",
        }
        deadline = time.monotonic() + self.wait_s
        # Sent while it is being (re)started, a request also waits for the replicas to
        # load (the new supervisor accepts connections before they do); sent to a ready
        # one, it gets the plain timeout: a hung replica shows as 504s soon.
        timeout = self.timeout_s + (0.0 if rt.state == "ready" else self.wait_s)
        retried = False
        while True:
            try:
                request = client.build_request(
                    "POST", url, content=body, headers=headers,
                    timeout=httpx.Timeout(timeout, connect=2.0),
                )  # fmt: skip
                answer = await client.send(request, stream=stream)
            except (httpx.ConnectError, httpx.ConnectTimeout):
                if rt.desired == "running" and rt.state != "failed" and time.monotonic() < deadline:
                    await asyncio.sleep(0.1)  # being (re)started: the port opens shortly
                    continue
                return json_error(
                    503, "deployment_unavailable",
                    f"deployment {name!r} is not answering on port {rt.port} (state "
                    f"{rt.state}); a crashed deployment is restarted automatically: retry in "
                    f"a few seconds, or see its state and log",
                )  # fmt: skip
            except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as exc:
                # A kept-alive connection that a draining supervisor closed under us.
                # Predictions and explanations change nothing, so one retry is safe (and
                # only one: an input that crashes replicas must not take down the next one).
                if not retried and time.monotonic() < deadline:
                    retried = True
                    continue
                return json_error(
                    502, "deployment_error", f"deployment {name!r} broke the connection ({exc})"
                )
            except httpx.TimeoutException:
                return json_error(
                    504, "deadline_exceeded",
                    f"deployment {name!r} did not answer within {timeout:.0f} s",
                )  # fmt: skip
            except httpx.HTTPError as exc:
                return json_error(
                    502, "deployment_error", f"deployment {name!r} cannot be called ({exc})"
                )
            # A supervisor draining for a scale or a restart answers 503 without running
            # the request: its successor will.
            replaced = rt.scaling or rt.state == "restarting"
            if answer.status_code == 503 and replaced and time.monotonic() < deadline:
                await answer.aclose()
                await asyncio.sleep(0.1)
                continue
            return answer

    async def aclose(self) -> None:
        """Close the connections of the running event loop (at its shutdown)."""
        client = self._clients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.aclose()

    def _client(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            for old in [other for other in list(self._clients) if other.is_closed()]:
                self._clients.pop(old, None)
            client = httpx.AsyncClient(
                trust_env=False,
                timeout=httpx.Timeout(self.timeout_s, connect=2.0),
                limits=httpx.Limits(max_connections=256, max_keepalive_connections=64),
            )
            self._clients[loop] = client
        return client
