"""Real replicas on 127.0.0.1 against what an attack does: stalled and excess
connections, foreign Hosts, a malformed input in a batch; and where replicas run."""

from __future__ import annotations

import asyncio
import json
import os
import selectors
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
import uvicorn

import lepton as lp
from lepton.serve._connections import ConnectionLimits
from lepton.serve._http_server import server_config

pytestmark = pytest.mark.integration

from servers import APP, LEPTON, Server, free_port, running, wait_ready  # noqa: E402

TIMEOUTS = ["--header-timeout", "1", "--body-timeout", "1", "--idle-timeout", "1"]


@pytest.fixture(scope="module")
def probe(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Path]]:
    """``lepton serve app.py:Probe`` started from a directory holding a private file,
    with a relative target, short timeouts and an extra allowed Host."""
    launch = tmp_path_factory.mktemp("launcher")
    shutil.copy(APP, launch / "app.py")
    (launch / "secret.txt").write_text("the launcher's file")
    port = free_port()
    log = launch / "server.log"
    home = tmp_path_factory.mktemp("home")
    args = ["serve", "app.py:Probe", "--port", str(port), "--allowed-host", "models.example"]
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [LEPTON, *args, *TIMEOUTS], cwd=launch, stdout=out, stderr=subprocess.STDOUT,
            env={**os.environ, "LEPTON_HOME": str(home)}, start_new_session=True,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, process, log)
        yield Server(process, url, log), launch
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def _port(server: Server) -> int:
    return int(server.url.rsplit(":", 1)[1])


def _read_until_closed(socks: list[socket.socket], timeout: float) -> dict[int, bytes | None]:
    """What each socket received until the server closed it (``None``: still open)."""
    received: dict[int, bytes | None] = {i: None for i in range(len(socks))}
    data = {i: b"" for i in range(len(socks))}
    selector = selectors.DefaultSelector()
    for i, sock in enumerate(socks):
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ, i)
    deadline = time.monotonic() + timeout
    while selector.get_map() and time.monotonic() < deadline:
        for key, _ in selector.select(timeout=0.2):
            i = key.data
            try:
                chunk = socks[i].recv(65536)
            except ConnectionResetError:
                chunk = b""
            if chunk:
                data[i] += chunk
            else:
                received[i] = data[i]
                selector.unregister(socks[i])
    selector.close()
    return received


def _stall(port: int, kind: str) -> socket.socket:
    """A connection that stops: before its first byte, in its headers, in its body, or
    after an answer (idle, or in the headers of its next request)."""
    host = f"127.0.0.1:{port}".encode()
    sock = socket.create_connection(("127.0.0.1", port))
    whole = b"GET /healthz HTTP/1.1\r\nHost: " + host + b"\r\n\r\n"
    if kind == "header":
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: " + host + b"\r\nContent-Le")
    elif kind == "body":
        head = b"POST /echo HTTP/1.1\r\nHost: " + host + b"\r\nContent-Type: application/json"
        sock.sendall(head + b"\r\nContent-Length: 100\r\n\r\n" + b'{"text": "')
    elif kind == "kept":
        sock.sendall(whole)
    elif kind == "kept-header":
        sock.sendall(whole + b"GET /healthz HTTP/1.1\r\nHo")
    return sock


def _check_closed_as_expected(kind: str, data: bytes | None) -> None:
    assert data is not None, f"a stalled connection ({kind}) was never closed"
    answers = [a for a in data.split(b"HTTP/1.1 ") if a]
    expected = {"idle": [], "header": ["408"], "body": ["408"], "kept": ["200"],
                "kept-header": ["200", "408"]}[kind]  # fmt: skip
    # a 408 is the courtesy before the close: a client gone meanwhile may see only the close
    assert [a[:3].decode() for a in answers] in (expected, [e for e in expected if e != "408"])
    for answer in answers:
        if answer.startswith(b"408"):
            error = json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]
            assert error["code"] == "request_timeout"


KINDS = ["idle", "header", "body", "kept", "kept-header"]


def test_stalled_connections_neither_block_requests_nor_stay_open(probe: tuple[Server, Path]):
    server, _ = probe
    kinds = [KINDS[i % len(KINDS)] for i in range(200)]
    stalled = [_stall(_port(server), kind) for kind in kinds]
    try:
        # A normal client is answered, on a new connection, while the 200 are open.
        with lp.Client(server.url, timeout=5, retries=0) as client:
            assert client.echo(text="still answering") == "still answering"
        closed = _read_until_closed(stalled, timeout=30)
    finally:
        for sock in stalled:
            sock.close()
    for i, kind in enumerate(kinds):
        _check_closed_as_expected(kind, closed[i])
    assert httpx.get(f"{server.url}/healthz", timeout=5).status_code == 200


async def _echo_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", str(len(body)).encode())]})  # fmt: skip
    await send({"type": "http.response.body", "body": body})


@pytest.fixture(params=["httptools", "h11"])
def guarded(request: pytest.FixtureRequest) -> Iterator[int]:
    """An in-process server built by ``server_config`` with short limits; yields its port."""
    limits = ConnectionLimits(header_timeout_s=0.5, body_timeout_s=0.5, idle_timeout_s=0.5,
                              max_connections=12, max_header_bytes=4096)  # fmt: skip
    config = server_config(_echo_app, limits=limits, parser=request.param, lifespan="off",
                           log_level="critical")  # fmt: skip
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])))
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        assert server.started
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


def test_the_guard_works_over_both_parsers(guarded: int):
    stalled = [_stall(guarded, kind) for kind in KINDS]
    big = socket.create_connection(("127.0.0.1", guarded))
    big.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 8000 + b"\r\n")
    try:
        closed = _read_until_closed([*stalled, big], timeout=30)
    finally:
        for sock in [*stalled, big]:
            sock.close()
    for i, kind in enumerate(KINDS):
        _check_closed_as_expected(kind, closed[i])
    too_big = closed[len(KINDS)]
    assert too_big is not None
    assert too_big.startswith((b"HTTP/1.1 431 ", b"HTTP/1.1 400 "))  # h11 has its own limit
    # over the limit: 12 open connections, the 13th is told 503 and closed
    held = _hold(guarded, 12)
    try:
        extra = socket.create_connection(("127.0.0.1", guarded))
        refused = _read_until_closed([extra], timeout=30)[0]
        assert refused is not None
        assert refused.startswith(b"HTTP/1.1 503 ")
        assert b'"too_many_connections"' in refused
        assert _request(held[0], b"x").startswith(b"HTTP/1.1 200 ")
    finally:
        for sock in held:
            sock.close()


def test_every_route_of_a_replica_refuses_a_foreign_host(probe: tuple[Server, Path]):
    server, _ = probe
    port = _port(server)
    index = httpx.get(f"{server.url}/", timeout=5).json()
    routes = [(r["method"], r["path"]) for r in index["routes"]]
    builtins = ["/", "/healthz", "/readyz", "/metrics", "/openapi.json"]
    routes += [("GET", path) for path in builtins]
    assert len(routes) == len(builtins) + 2
    with httpx.Client(base_url=server.url, timeout=5) as client:
        for method, path in routes:
            body = {"json": {"text": "x"}} if method == "POST" else {}
            for host in ("evil.example", f"evil.example:{port}", f"127.0.0.1:{port + 1}"):
                r = client.request(method, path, headers={"host": host}, **body)
                assert r.status_code == 400, (host, path, r.text)
                assert r.json()["error"]["code"] == "invalid_host"
            for host in (f"localhost:{port}", f"[::1]:{port}", "models.example"):
                r = client.request(method, path, headers={"host": host}, **body)
                assert r.status_code == 200, (host, path, r.text)
        as_form = {"content-type": "application/x-www-form-urlencoded"}
        form = client.post("/echo", content=b'{"text": "x"}', headers=as_form)
        assert form.status_code == 415
        assert form.json()["error"]["code"] == "unsupported_media_type"


def test_replicas_run_in_an_empty_private_directory(probe: tuple[Server, Path]):
    server, launch = probe
    where = httpx.get(f"{server.url}/where", timeout=5).json()
    workdir = Path(where["cwd"])
    assert workdir != launch
    assert where["entries"] == []
    assert where["mode"] == 0o700
    assert workdir.is_dir()
    assert not (workdir / "secret.txt").exists()


def test_a_replica_directory_is_removed_when_it_stops(tmp_path: Path):
    with running("serve", f"{APP}:Probe", "--replicas", "2", tmp=tmp_path) as s:
        seen: set[str] = set()
        deadline = time.monotonic() + 30
        while len(seen) < 2 and time.monotonic() < deadline:
            with httpx.Client(timeout=5) as client:  # a new connection: either replica
                seen.add(client.get(f"{s.url}/where").json()["cwd"])
        assert len(seen) == 2, "both replicas should have answered"
        assert all(Path(d).is_dir() for d in seen)
        s.process.send_signal(signal.SIGTERM)
        assert s.process.wait(timeout=60) == 0
    assert [d for d in seen if Path(d).exists()] == []


def _request(sock: socket.socket, host: bytes) -> bytes:
    """Send ``GET /healthz`` and read one whole answer (or what came before a close)."""
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: " + host + b"\r\n\r\n")
    data = b""
    while True:
        head, sep, body = data.partition(b"\r\n\r\n")
        if sep:
            fields = dict(line.split(b":", 1) for line in head.split(b"\r\n")[1:] if b":" in line)
            if len(body) >= int(fields.get(b"content-length", b"0")):
                return data
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk


def _hold(port: int, count: int) -> list[socket.socket]:
    """``count`` open connections, each answered once (so the server counts them); the
    connections of earlier tests may take a moment to be released."""
    held: list[socket.socket] = []
    deadline = time.monotonic() + 30
    while len(held) < count and time.monotonic() < deadline:
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        if _request(sock, f"127.0.0.1:{port}".encode()).startswith(b"HTTP/1.1 200 "):
            held.append(sock)
        else:
            sock.close()
            time.sleep(0.05)  # a poll interval, not a synchronization
    assert len(held) == count
    return held


def test_connections_beyond_the_limit_get_503_and_open_ones_keep_working(tmp_path: Path):
    with running("serve", f"{APP}:Probe", "--max-connections", "8", tmp=tmp_path) as s:
        port = _port(s)
        host = f"127.0.0.1:{port}".encode()
        held = _hold(port, 8)
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as extra:
                refused = _request(extra, host)
            assert refused.startswith(b"HTTP/1.1 503 "), refused[:80]
            error = json.loads(refused.split(b"\r\n\r\n", 1)[1])["error"]
            assert error["code"] == "too_many_connections"
            # The open connections are not disturbed: each still answers.
            assert all(_request(sock, host).startswith(b"HTTP/1.1 200 ") for sock in held)
            held.pop().close()
            held.extend(_hold(port, 1))  # the freed place is taken again
        finally:
            for sock in held:
                sock.close()


def test_a_malformed_input_fails_alone_in_a_batch_of_a_deployed_model(tmp_path: Path):
    torch.manual_seed(0)
    model = lp.models.MLP(in_features=8, num_classes=3).eval()
    version = lp.register(model, "no-shape")  # no dataset: no recorded input shape
    assert "shape" not in version.manifest["input_schema"]
    x = torch.randn(60, 8)
    bodies: list[dict[str, object]] = [{"inputs": row.tolist()} for row in x]
    bodies.insert(30, {"inputs": [1.0, 2.0, 3.0]})
    with running("deploy", "no-shape:1", tmp=tmp_path) as s:
        url = f"{s.url}/predict"
        with httpx.Client(timeout=60) as client, ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(lambda b: client.post(url, json=b), bodies))
        bad = answers.pop(30)
        assert [a.status_code for a in answers] == [200] * 60, [a.text for a in answers]
        assert bad.status_code == 422
        assert bad.json()["error"]["code"] == "invalid_shape"
        with torch.inference_mode():
            expected = model(x).softmax(dim=1)
        got = torch.tensor([a.json()["probabilities"] for a in answers])
        assert torch.allclose(got, expected, atol=1e-5)
        # `lepton predict` sends JSON as JSON
        sample = tmp_path / "x.json"
        sample.write_text(json.dumps(x[0].tolist()))
        done = subprocess.run([LEPTON, "predict", s.url, "--input", str(sample), "--json"],
                              capture_output=True, text=True, timeout=120)  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["label"] == int(expected[0].argmax())
