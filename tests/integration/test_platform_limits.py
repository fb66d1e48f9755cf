"""A live ``lepton server`` over raw sockets: a request without a token is refused from its
headers alone, on every route that is not public, without the server waiting for the body
it announced; and a slow, large upload from a signed-in caller holds up nobody else."""

from __future__ import annotations

import os
import re
import socket
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from servers import start_platform, stop_platform

from lepton.platform._app import Platform, ServerConfig, create_app
from lepton.platform._http import PUBLIC, audited, iter_routes, rule_of
from lepton.storage import open_database

pytestmark = [pytest.mark.integration]

HUGE = 200 * 1024 * 1024 * 1024  # announced, never sent


def _routes(tmp_path: Path) -> list[tuple[str, str, bool]]:
    """Every (method, path, audited) that is not public, path parameters filled in."""
    db = open_database(f"sqlite:///{tmp_path / 'routes.db'}")
    app = create_app(Platform(db, tmp_path, ServerConfig(manage=False)))
    found = []
    for method, path, endpoint in iter_routes(app.routes):
        if rule_of(endpoint) != PUBLIC:
            filled = re.sub(r"\{[^}]+\}", lambda m: "1" if "id" in m.group(0) else "x", path)
            found.append((method, filled, audited(endpoint)))
    return found


def _head_only(port: int, method: str, path: str, headers: dict[str, str]) -> tuple[bytes, bool]:
    """Send a request's head and none of its body; returns the answer's head and whether
    the server then closed the connection (rather than wait for the body)."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        received = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                return received, False
            if not chunk:
                return received, True
            received += chunk


def test_refused_from_the_headers_without_waiting_for_the_body(tmp_path: Path) -> None:
    home = Path(os.environ["LEPTON_HOME"])
    server = start_platform(home, tmp_path)
    port = urlsplit(server.url).port
    assert port is not None
    try:
        routes = _routes(tmp_path)
        assert len(routes) >= 50
        for method, path, _ in routes:
            for extra in ({}, {"Authorization": "Bearer lp_wrong"}):
                headers = {
                    "Content-Type": "application/json",
                    "Content-Length": str(HUGE),
                    "Accept": "application/json",
                    **extra,
                }
                answer, closed = _head_only(port, method, path, headers)
                status_line = answer.split(b"\r\n", 1)[0].decode()
                expected = "401" if path.startswith("/api/") else "303"
                assert status_line.split(" ")[1] == expected, (method, path, status_line)
                assert closed, f"{method} {path}: the server waited for the announced body"
        unsafe = sum(2 for m, _, logged in routes if logged and m not in ("GET", "HEAD"))
        deadline = time.monotonic() + 30
        with server.client() as admin:
            while True:  # entries are written after the answers went out
                audit = admin.get("/api/v1/audit?actor=anonymous&limit=500").json()
                counted = sum(e["detail"]["count"] for e in audit["items"])
                if counted >= unsafe or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
        assert counted == unsafe  # every refused change counted ...
        assert audit["total"] < unsafe  # ... in fewer entries than requests
        assert "Traceback" not in server.log
    finally:
        stop_platform(server, home)


def test_health_answers_while_a_large_body_streams_in_slowly(tmp_path: Path) -> None:
    home = Path(os.environ["LEPTON_HOME"])
    server = start_platform(home, tmp_path)
    port = urlsplit(server.url).port
    assert port is not None
    streaming, stop = threading.Event(), threading.Event()
    sent = [0]

    def upload() -> None:  # a signed-in caller: its body is read, slowly
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            head = (
                f"POST /api/v1/users HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                f"Authorization: Bearer {server.admin_token}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {100 * 1024 * 1024}\r\n\r\n"
            )
            sock.sendall(head.encode() + b'{"name": "' + b"a" * 1024)
            while not stop.is_set():
                sock.sendall(b"a" * 16384)
                sent[0] += 16384
                streaming.set()
                stop.wait(0.02)  # pacing the upload, not waiting for anything

    uploader = threading.Thread(target=upload, daemon=True)
    uploader.start()
    try:
        assert streaming.wait(30), "the upload did not start"
        before = sent[0]
        deadline = time.monotonic() + 60
        answered = 0
        while answered < 5 or sent[0] == before:
            assert time.monotonic() < deadline, "the upload stalled"
            health = httpx.get(f"{server.url}/api/v1/health", timeout=30)
            assert health.status_code == 200
            answered += 1
        assert uploader.is_alive()  # the upload was still streaming all along
    finally:
        stop.set()
        uploader.join(timeout=30)
        stop_platform(server, home)
