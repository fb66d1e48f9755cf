"""The real server in a subprocess on 127.0.0.1: batching, limits, drain, restarts, auth."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import torch

import lepton as lp
from helpers import wait_until
from lepton.errors import OverloadedError

pytestmark = pytest.mark.integration

from servers import APP, LEPTON, Server, running  # noqa: E402
from serving_app import tiny_model  # noqa: E402


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("serve")
    with running("serve", f"{APP}:Tiny", "--max-body-mb", "0.01", tmp=tmp) as s:
        yield s


def _post_many(
    url: str, bodies: list[dict[str, object]], workers: int = 32
) -> list[httpx.Response]:
    with httpx.Client(timeout=30) as client, ThreadPoolExecutor(workers) as pool:
        return list(pool.map(lambda b: client.post(url, json=b), bodies))


def test_batched_and_unbatched_answers_equal_the_model(server: Server) -> None:
    torch.manual_seed(1)
    x = torch.randn(64, 16)
    bodies = [{"inputs": row.tolist()} for row in x]
    batched = _post_many(f"{server.url}/predict", bodies)
    unbatched = _post_many(f"{server.url}/single", bodies)
    assert [r.status_code for r in batched + unbatched] == [200] * 128
    with torch.inference_mode():
        expected = tiny_model()(x)
    assert torch.allclose(torch.tensor([r.json() for r in batched]), expected, atol=1e-5)
    assert torch.allclose(torch.tensor([r.json() for r in unbatched]), expected, atol=1e-5)
    metrics = httpx.get(f"{server.url}/metrics").text
    sizes = {line.split()[0]: float(line.split()[1]) for line in metrics.splitlines()
             if line.startswith('lepton_batch_size_') and '/predict' in line}  # fmt: skip
    count, total = (
        sizes['lepton_batch_size_count{route="/predict"}'],
        sizes['lepton_batch_size_sum{route="/predict"}'],
    )
    assert total == 64
    assert count < 64, "concurrent requests were never batched together"


def test_body_over_the_limit_is_413_and_json(server: Server) -> None:
    big = {"inputs": [0.5] * 4000}  # ~20 KB > 10 KB limit
    r = httpx.post(f"{server.url}/single", json=big)
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "payload_too_large"

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit holds while reading
        yield b'{"inputs": ['
        for _ in range(3000):
            yield b"0.5,"
        yield b"0.5]}"

    r = httpx.post(
        f"{server.url}/single", content=chunks(), headers={"content-type": "application/json"}
    )
    assert r.status_code == 413
    assert httpx.get(f"{server.url}/healthz").status_code == 200


def test_burst_over_the_queue_gets_503_with_retry_after_and_health_stays_up(server: Server) -> None:
    # /slow: 8 workers + 2 queued per replica; 24 requests of 0.4 s at once (the queued
    # two finish at 0.8 s, inside the 1 s deadline).
    with httpx.Client(timeout=30) as client, ThreadPoolExecutor(24) as pool:
        futures = [
            pool.submit(client.post, f"{server.url}/slow", json={"seconds": 0.4}) for _ in range(24)
        ]
        # A refusal comes at once, and only when the queue is full: the burst has arrived.
        wait_until(lambda: any(f.done() for f in futures), 10, message="no answer to the burst")
        health = client.get(f"{server.url}/healthz")
        # answered while accepted requests still run: health is not queued behind them
        still_running = sum(not f.done() for f in futures)
        answers = [f.result() for f in futures]
    codes = sorted(r.status_code for r in answers)
    assert codes.count(200) == 10, codes
    assert codes.count(503) == 14, codes
    refused = [r for r in answers if r.status_code == 503]
    assert all(r.headers["retry-after"] == "1" for r in refused)
    assert all(r.json()["error"]["code"] == "overloaded" for r in refused)
    assert health.status_code == 200
    assert still_running > 0, "health answered only after the burst had finished"


def test_deadline_answers_504_in_time(server: Server) -> None:
    started = time.perf_counter()
    r = httpx.post(f"{server.url}/slow", json={"seconds": 3.0}, timeout=10)
    elapsed = time.perf_counter() - started
    assert r.status_code == 504
    assert r.json()["error"]["code"] == "deadline_exceeded"
    assert 0.9 < elapsed < 2.0  # the route's timeout_s is 1.0
    started = time.perf_counter()
    r = httpx.post(
        f"{server.url}/slow", json={"seconds": 3.0}, headers={"X-Request-Timeout": "0.3"}
    )
    assert r.status_code == 504
    assert time.perf_counter() - started < 0.9


def test_streaming_and_client_methods(server: Server) -> None:
    with lp.Client(server.url) as client:
        assert list(client.count(n=4)) == [{"i": 0}, {"i": 1}, {"i": 2}, {"i": 3}]
        out = client.single(inputs=[0.0] * 16)
        with torch.inference_mode():
            assert torch.allclose(torch.tensor(out), tiny_model()(torch.zeros(1, 16))[0], atol=1e-5)
        assert "pid" in client.whoami()
        with pytest.raises(AttributeError, match="has no route 'nope'"):
            client.nope  # noqa: B018
        with pytest.raises(lp.errors.RequestError, match="validation_error"):
            client.single(inputs="not a list")


def _wait_inflight(url: str, n: int) -> None:
    """Poll ``/metrics`` until ``n`` requests are in flight (the scrape is one more)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for line in httpx.get(f"{url}/metrics", timeout=5).text.splitlines():
            if line.startswith("lepton_inflight_requests") and float(line.split()[-1]) > n:
                return
        time.sleep(0.02)
    raise AssertionError(f"{n} requests were never in flight at once")


def test_client_retries_503_until_capacity_frees(server: Server) -> None:
    with (
        httpx.Client(timeout=30) as raw,
        ThreadPoolExecutor(12) as pool,
        lp.Client(server.url, retries=4) as client,
        lp.Client(server.url, retries=0) as impatient,
    ):
        for each in (impatient, client):  # fetch /openapi.json before the hogs
            assert "hold" in each.routes
        # 8 running + 2 queued fill the replica; the queued two finish at ~3 s.
        hogs = [
            pool.submit(raw.post, f"{server.url}/hold", json={"seconds": 1.5}) for _ in range(10)
        ]
        _wait_inflight(server.url, 10)
        with pytest.raises(OverloadedError, match="already waiting"):  # no retries: at once
            impatient.hold(seconds=0.0)
        assert client.hold(seconds=0.0)["slept"] == 0.0  # retried after Retry-After
        assert all(h.result().status_code == 200 for h in hogs)


def test_sigterm_drains_without_losing_in_flight_requests(tmp_path: Path) -> None:
    with running("serve", f"{APP}:Tiny", "--grace", "10", tmp=tmp_path) as s:
        with httpx.Client(timeout=30) as client, ThreadPoolExecutor(6) as pool:
            inflight = [
                pool.submit(client.post, f"{s.url}/hold", json={"seconds": 1.5}) for _ in range(5)
            ]
            _wait_inflight(s.url, 5)
            s.process.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 10
            while client.get(f"{s.url}/readyz").status_code != 503:  # the drain began
                assert time.monotonic() < deadline, "the replica never started draining"
                time.sleep(0.02)
            late = client.post(f"{s.url}/single", json={"inputs": [0.0] * 16})
            answers = [f.result() for f in inflight]
        assert [r.status_code for r in answers] == [200] * 5
        assert late.status_code == 503
        assert s.process.wait(timeout=20) == 0


def test_a_killed_replica_is_restarted(tmp_path: Path) -> None:
    with running("serve", f"{APP}:Tiny", "--replicas", "2", tmp=tmp_path) as s:
        deadline = time.monotonic() + 10
        while len(s.worker_pids()) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        before = s.worker_pids()
        assert len(before) == 2
        subprocess.run(["kill", "-9", str(before[0])], check=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            now = s.worker_pids()
            if len(now) == 2 and before[0] not in now:
                break
            time.sleep(0.2)
        assert len(now) == 2, s.log
        assert before[0] not in now, s.log
        assert before[1] in now, s.log
        assert "restarting" in s.log
        from servers import wait_ready

        wait_ready(s.url, s.process, s.log_path)
        seen = {lp.Client(s.url).whoami()["pid"] for _ in range(40)}
        assert seen <= set(now)
        bodies = [{"inputs": [0.1] * 16}] * 40
        assert all(r.status_code == 200 for r in _post_many(f"{s.url}/predict", bodies))


def test_off_loopback_needs_a_token_and_tokens_are_checked(tmp_path: Path) -> None:
    refused = subprocess.run(
        [LEPTON, "serve", f"{APP}:Tiny", "--host", "0.0.0.0", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    assert refused.returncode == 2
    assert "refusing to listen on 0.0.0.0 without an API token" in refused.stderr
    assert "Traceback" not in refused.stderr
    token = "s3cret-token-for-tests"
    with running("serve", f"{APP}:Tiny", tmp=tmp_path, env={"LEPTON_SERVE_TOKEN": token}) as s:
        body = {"inputs": [0.0] * 16}
        assert httpx.post(f"{s.url}/single", json=body).status_code == 401
        wrong = httpx.post(f"{s.url}/single", json=body, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        assert wrong.json()["error"]["code"] == "unauthorized"
        right = httpx.post(
            f"{s.url}/single", json=body, headers={"Authorization": f"Bearer {token}"}
        )
        assert right.status_code == 200
        assert httpx.get(f"{s.url}/metrics").status_code == 401
        assert httpx.get(f"{s.url}/healthz").status_code == 200
        assert lp.Client(s.url, token=token).single(inputs=[0.0] * 16) == right.json()


def test_replicas_stop_when_the_supervisor_is_killed(tmp_path: Path) -> None:
    with running("serve", f"{APP}:Tiny", "--replicas", "2", "--grace", "2", tmp=tmp_path) as s:
        deadline = time.monotonic() + 10
        while len(s.worker_pids()) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        workers = s.worker_pids()
        assert len(workers) == 2
        workdirs = [Path(os.readlink(f"/proc/{p}/cwd")) for p in workers]
        s.process.kill()
        s.process.wait()
        deadline = time.monotonic() + 15
        alive = workers
        while alive and time.monotonic() < deadline:
            alive = [p for p in workers if Path(f"/proc/{p}").exists() and "Z" not in _state(p)]
            time.sleep(0.1)
        assert alive == [], "replicas kept serving after their supervisor died"
        # their private working directories went with them, though nobody was left to
        # remove them but the replicas themselves
        assert [d for d in workdirs if d.exists()] == []


def test_a_replica_whose_supervisor_died_while_it_started_does_not_serve(tmp_path: Path) -> None:
    # The supervisor can be killed between spawning a replica and the replica's prctl:
    # the replica then has a new parent and must stop instead of serving forever.
    import json
    import os
    import socket
    import sys

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    spec = {
        "target": f"{APP}:Tiny", "model": None, "fd": sock.fileno(), "ready_fd": None,
        "max_body_bytes": 1024, "grace_s": 1, "threads": 1, "replica": 0,
        "supervisor": os.getpid() + 999_999,  # not this test: "the supervisor is gone"
    }  # fmt: skip
    env = dict(os.environ, LEPTON_SERVE_SPEC=json.dumps(spec))
    done = subprocess.run(
        [sys.executable, "-m", "lepton.serve._worker"],
        pass_fds=(sock.fileno(),), env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    sock.close()
    assert done.returncode == 0
    assert "is gone; this replica stops" in done.stderr


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "Z"
