"""Serving hardening, in-process: Host/Origin rules on every route, JSON only as JSON,
one bad input failing alone in a batch, the shared server config, replica environments.
"""

from __future__ import annotations

import asyncio
import math
import os
import re
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import torch
import uvicorn

import lepton as lp
from helpers import run_app
from lepton.errors import ConfigError, RequestError
from lepton.serve import ModelService, ServeOptions, Service
from lepton.serve._app import _BUILTIN, ServiceApp
from lepton.serve._batcher import Batcher
from lepton.serve._connections import ConnectionLimits, _Guard
from lepton.serve._hosts import HostPolicy, check_allowed_host
from lepton.serve._http_server import server_config
from lepton.serve._service import absolute_target
from lepton.serve._supervisor import absolute_env, sweep_stale_dirs

SRC = Path(__file__).resolve().parents[2] / "src" / "lepton"


@pytest.fixture(autouse=True)
def _single_process_metrics(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)


# -- Host and Origin -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bound", "allowed", "host", "ok"),
    [
        ("127.0.0.1", [], "127.0.0.1:8100", True),
        ("127.0.0.1", [], "localhost:8100", True),
        ("127.0.0.1", [], "LOCALHOST:8100", True),
        ("127.0.0.1", [], "[::1]:8100", True),
        ("127.0.0.1", [], "127.0.0.1:8101", False),
        ("127.0.0.1", [], "127.0.0.1", False),  # port 80 implied
        ("127.0.0.1", [], "evil.example:8100", False),
        ("127.0.0.1", [], "evil.example", False),
        ("127.0.0.1", [], "127.0.0.1:8100@evil", False),
        ("127.0.0.1", [], "", False),
        ("127.0.0.1", ["models.example"], "models.example:9999", True),
        ("127.0.0.1", ["models.example:443"], "models.example:443", True),
        ("127.0.0.1", ["models.example:443"], "models.example:8100", False),
        ("::1", [], "[::1]:8100", True),
        ("0.0.0.0", [], "0.0.0.0:8100", True),
        ("0.0.0.0", [], "127.0.0.1:8100", True),
        ("0.0.0.0", [], "10.1.2.3:8100", False),
        ("0.0.0.0", ["10.1.2.3"], "10.1.2.3:8100", True),
        ("10.1.2.3", [], "10.1.2.3:8100", True),
        ("10.1.2.3", [], "localhost:8100", False),
        ("10.1.2.3", ["*"], "anything.example", True),
    ],
)
def test_host_policy_accepts_only_the_bound_address(bound, allowed, host, ok):
    policy = HostPolicy.for_address(bound, 8100, allowed)
    assert policy.allows(host.encode()) is ok


@pytest.mark.parametrize(
    ("origin", "ok"),
    [
        ("http://127.0.0.1:8100", True),
        ("http://localhost:8100", True),
        ("http://evil.example", False),
        ("http://127.0.0.1:8101", False),
        ("https://127.0.0.1:8100", True),
        ("null", False),
        ("file://", False),
        ("http://127.0.0.1:8100@evil.example", False),
    ],
)
def test_origin_must_be_a_page_of_the_service(origin, ok):
    assert HostPolicy.for_address("127.0.0.1", 8100).allows_origin(origin.encode()) is ok


@pytest.mark.parametrize("value", ["", "a b", "x:notaport", "http://x", "x:0", "[::1"])
def test_bad_allowed_host_is_a_config_error(value):
    with pytest.raises(ConfigError, match="--allowed-host"):
        check_allowed_host(value)


def test_any_host_needs_a_token():
    with pytest.raises(ConfigError, match="allowed-host '\\*' accepts any Host"):
        ServeOptions(target="a.py:A", allowed_hosts=["*"]).validate()
    ServeOptions(target="a.py:A", allowed_hosts=["*"], token="t").validate()


class Everything(Service):
    """One route of each kind: batched, plain, async, streaming, GET, a custom path."""

    @lp.handler(batch_size=4, max_wait_ms=1)
    def batched(self, x: list[float]) -> list[float]:
        return x

    @lp.handler
    def plain(self, x: float) -> float:
        return x

    @lp.handler
    async def coro(self, x: float) -> float:
        return x

    @lp.handler
    def stream(self, n: int) -> Any:
        yield from range(n)

    @lp.handler(method="GET")
    def info(self) -> dict[str, str]:
        return {"ok": "yes"}

    @lp.handler(path="/v1/custom")
    def custom(self, x: float) -> float:
        return x


def _all_routes(app: ServiceApp) -> list[tuple[str, str]]:
    # The built-ins and every handler: a route added later is covered without editing this.
    return [("GET", p) for p in sorted(_BUILTIN)] + sorted(app.routes)


def _each_route_refuses(app: ServiceApp, headers: dict[str, str], status: int, code: str) -> None:
    async def scenario(client: httpx.AsyncClient, _app: Any) -> list[tuple[str, httpx.Response]]:
        answers = []
        for method, path in _all_routes(app):
            body = {"json": {"x": 1.0, "n": 1}} if method == "POST" else {}
            answers.append((path, await client.request(method, path, headers=headers, **body)))
        return answers

    answers = run_app(app, scenario)
    assert len(answers) == len(_BUILTIN) + len(app.routes)
    for path, r in answers:
        assert r.status_code == status, (path, r.text)
        assert r.json()["error"]["code"] == code, path


@pytest.mark.parametrize("token", [None, "s3cret"])
def test_every_route_refuses_a_foreign_host(token):
    policy = HostPolicy.for_address("127.0.0.1", 8100)
    app = Everything().asgi(token=token, hosts=policy)
    _each_route_refuses(app, {"host": "evil.example:8100"}, 400, "invalid_host")
    app = Everything().asgi(token=token, hosts=policy)
    _each_route_refuses(app, {"host": "127.0.0.1:9999"}, 400, "invalid_host")


def test_every_route_refuses_a_foreign_origin():
    app = Everything().asgi(hosts=HostPolicy.for_address("127.0.0.1", 8100))
    _each_route_refuses(app, {"origin": "http://evil.example"}, 403, "forbidden_origin")


def test_every_model_service_route_refuses_a_foreign_host():
    # The routes of a deployed model (/predict, /explain, /info); the handlers never run.
    service = ModelService("unused@production")
    app = ServiceApp(service, ModelService.routes(), hosts=HostPolicy.for_address("::1", 8100))
    assert {path for _, path in app.routes} == {"/predict", "/explain", "/info"}
    _each_route_refuses(app, {"host": "evil.example"}, 400, "invalid_host")


def test_own_host_and_same_origin_are_answered():
    async def scenario(client: httpx.AsyncClient, _app: Any) -> list[int]:
        own = {"origin": "http://localhost:8100", "host": "localhost:8100"}
        return [
            (await client.get("/healthz")).status_code,
            (await client.get("/info", headers=own)).status_code,
            (await client.post("/plain", json={"x": 2}, headers=own)).status_code,
        ]

    app = Everything().asgi(hosts=HostPolicy.for_address("127.0.0.1", 8100))
    assert run_app(app, scenario) == [200, 200, 200]


def test_in_process_default_is_loopback_on_any_port():
    async def scenario(client: httpx.AsyncClient, _app: Any) -> list[int]:
        return [
            (await client.get("/healthz", headers={"host": "localhost:1234"})).status_code,
            (await client.get("/healthz", headers={"host": "evil.example"})).status_code,
        ]

    assert run_app(Everything().asgi(), scenario) == [200, 400]


# -- one bad input fails alone ----------------------------------------------------------


def test_batcher_isolates_the_input_a_batch_fails_on():
    calls: list[list[int]] = []

    async def main() -> list[Any]:
        async def run(values: list[int]) -> list[int]:
            calls.append(values)
            if -1 in values:
                raise RuntimeError("cannot stack")
            return [v * 2 for v in values]

        batcher = Batcher(run, batch_size=8, max_wait_s=0.05, max_queue=10)
        deadline = time.monotonic() + 5
        values = [1, 2, 3, -1, 5, 6, 7, 8]
        futures = [batcher.submit(v, deadline) for v in values]
        outcomes = await asyncio.gather(*futures, return_exceptions=True)
        await batcher.close()
        return outcomes

    outcomes = asyncio.run(main())
    assert outcomes[:3] == [2, 4, 6]
    assert outcomes[4:] == [10, 12, 14, 16]
    assert isinstance(outcomes[3], RequestError)
    assert (outcomes[3].status, outcomes[3].code) == (422, "invalid_input")
    assert "RuntimeError" in str(outcomes[3])
    assert "cannot stack" not in str(outcomes[3])
    assert len(calls) <= 1 + 2 * math.ceil(math.log2(8))  # halves, not one by one


def test_batcher_keeps_a_failure_of_every_input_a_server_error():
    async def main() -> list[Any]:
        async def run(values: list[int]) -> list[int]:
            raise RuntimeError("the model is broken")

        batcher = Batcher(run, batch_size=4, max_wait_s=0.05, max_queue=10)
        futures = [batcher.submit(v, time.monotonic() + 5) for v in range(4)]
        outcomes = await asyncio.gather(*futures, return_exceptions=True)
        await batcher.close()
        return outcomes

    assert all(type(o) is RuntimeError for o in asyncio.run(main()))


class Ragged(Service):
    @lp.handler(batch_size=16, max_wait_ms=50)
    def predict(self, inputs: list[list[float]]) -> list[float]:
        # A short row makes the batch ragged (ValueError), and alone a matmul error.
        return (torch.tensor(inputs) @ torch.ones(4)).tolist()  # type: ignore[no-any-return]


def test_a_ragged_input_fails_alone_with_422_and_its_batch_succeeds():
    async def scenario(client: httpx.AsyncClient, _app: Any) -> list[httpx.Response]:
        bodies = [{"inputs": [float(i)] * 4} for i in range(12)]
        bodies.insert(5, {"inputs": [1.0, 2.0]})
        return await asyncio.gather(*[client.post("/predict", json=b) for b in bodies])

    answers = run_app(Ragged().asgi(), scenario)
    bad = answers.pop(5)
    assert [r.status_code for r in answers] == [200] * 12
    assert [r.json() for r in answers] == [4.0 * i for i in range(12)]
    assert bad.status_code == 422
    assert bad.json()["error"]["code"] == "invalid_input"


class _NoShapeModel(ModelService):
    """A model service on an in-memory model without a recorded input shape."""

    def setup(self) -> None:
        torch.manual_seed(0)
        self.model = torch.nn.Linear(4, 2).eval()
        self.version = SimpleNamespace(ref="m:1", name="m", version=1, manifest={})
        self.shape = None
        self.steps = []
        self.classifier = True
        self.classes = None
        self.good_shapes = set()


def test_model_service_checks_each_input_and_never_stacks_mixed_shapes():
    async def scenario(client: httpx.AsyncClient, _app: Any) -> tuple[list[httpx.Response], ...]:
        good = [client.post("/predict", json={"inputs": [float(i), 1.0, 2.0, 3.0]})
                for i in range(20)]  # fmt: skip
        wrong = client.post("/predict", json={"inputs": [1.0, 2.0, 3.0]})
        empty = client.post("/predict", json={"inputs": []})
        answers = await asyncio.gather(*good, wrong, empty)
        return answers[:20], answers[20:]

    good, (wrong, empty) = run_app(_NoShapeModel("m:1").asgi(), scenario)
    assert [r.status_code for r in good] == [200] * 20, [r.text for r in good]
    assert wrong.status_code == 422
    assert wrong.json()["error"]["code"] == "invalid_shape"
    assert "cannot take inputs of shape [3]" in wrong.json()["error"]["message"]
    assert empty.status_code == 422


def test_check_option_must_name_a_method():
    class Bad(Service):
        @lp.handler(check="nope")
        def f(self, x: int) -> int:
            return x

    with pytest.raises(ConfigError, match="check='nope' is not a method"):
        Bad.routes()


def test_check_refuses_one_request_before_its_batch():
    seen: list[list[int]] = []

    class Checked(Service):
        def positive(self, x: int) -> None:
            if x < 0:
                raise RequestError("x must be >= 0")

        @lp.handler(batch_size=8, max_wait_ms=20, check="positive")
        def f(self, x: list[int]) -> list[int]:
            seen.append(x)
            return x

    async def scenario(client: httpx.AsyncClient, _app: Any) -> list[httpx.Response]:
        return await asyncio.gather(*[client.post("/f", json={"x": v}) for v in (1, -2, 3)])

    answers = run_app(Checked().asgi(), scenario)
    assert [r.status_code for r in answers] == [200, 400, 200]
    assert answers[1].json()["error"]["message"] == "x must be >= 0"
    assert all(-2 not in batch for batch in seen)


# -- the one server config ---------------------------------------------------------------


@pytest.mark.parametrize("parser", ["httptools", "h11"])
def test_server_config_installs_the_guarded_protocol(parser):
    limits = ConnectionLimits(header_timeout_s=3, idle_timeout_s=4, max_connections=50)
    config = server_config(lambda *a: None, limits=limits, parser=parser, port=0)
    config.load()
    protocol = config.http_protocol_class
    assert issubclass(protocol, _Guard)
    assert protocol.limits == limits  # type: ignore[attr-defined]
    assert config.limit_concurrency is None
    assert config.timeout_keep_alive == 4


def test_server_config_refuses_settings_it_owns():
    with pytest.raises(ConfigError, match="sets limit_concurrency itself"):
        server_config(lambda *a: None, limit_concurrency=10)
    with pytest.raises(ConfigError, match="parser 'zttp'"):
        server_config(lambda *a: None, parser="zttp")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"header_timeout_s": 0}, "header timeout"),
        ({"body_timeout_s": -1}, "body timeout"),
        ({"idle_timeout_s": 0}, "idle timeout"),
        ({"max_connections": 0}, "--max-connections"),
    ],
)
def test_connection_limits_are_validated(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        ConnectionLimits(**kwargs)


def test_every_server_of_lepton_uses_the_shared_config():
    # uvicorn.Config/uvicorn.run anywhere else would skip the timeouts and the limit.
    pattern = re.compile(r"\b(uvicorn\.(Config|run)\s*\(|from uvicorn import)")
    offenders = [
        f"{path.relative_to(SRC)}:{n}"
        for path in SRC.rglob("*.py")
        if path.name != "_http_server.py"
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert offenders == []
    assert uvicorn.Config  # the pattern names what it guards


# -- replicas do not depend on the launcher's directory ------------------------------------


def test_relative_paths_are_made_absolute_for_replicas(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.chdir(tmp_path)
    env = absolute_env({
        "LEPTON_HOME": "home", "PYTHONPATH": f"lib{':'}/abs/lib",
        "LEPTON_DATABASE_URL": "sqlite:///db/lepton.db", "OTHER": "rel",
    })  # fmt: skip
    assert env["LEPTON_HOME"] == str(tmp_path / "home")
    assert env["PYTHONPATH"] == f"{tmp_path / 'lib'}:/abs/lib"
    assert env["LEPTON_DATABASE_URL"] == f"sqlite:///{tmp_path / 'db' / 'lepton.db'}"
    assert env["OTHER"] == "rel"
    assert absolute_target("app.py:Svc") == f"{tmp_path / 'app.py'}:Svc"
    assert absolute_target("pkg.module:Svc") == "pkg.module:Svc"


def test_folders_of_a_killed_supervisor_are_swept(tmp_path: Path):
    gone = subprocess.Popen(["true"])
    gone.wait()  # a pid that is no longer a process
    old = time.time() - 3600
    stale = [
        tmp_path / f"lepton-replica-{gone.pid}-0-abc",
        tmp_path / f"lepton-metrics-{gone.pid}-x",
    ]
    kept = [
        tmp_path / f"lepton-replica-{os.getpid()}-0-abc",  # its supervisor is alive
        tmp_path / "lepton-replica-0-abc",  # not named with a pid
        tmp_path / f"lepton-replica-{gone.pid}-1-new",  # too recent: replicas may be draining
    ]
    for folder in stale + kept:
        folder.mkdir()
        (folder / "left.txt").write_text("x")
        if not folder.name.endswith("new"):
            os.utime(folder, (old, old))
    assert sorted(sweep_stale_dirs(str(tmp_path))) == sorted(stale)
    assert [f.exists() for f in stale + kept] == [False, False, True, True, True]


def test_client_maps_the_new_statuses():
    from lepton.serve._client import _error

    for status in (408, 415, 431):
        body = {"error": {"code": "c", "message": "m"}}
        assert type(_error(httpx.Response(status, json=body))) is RequestError
