"""Deployments outlive ``lepton server``: a real server on 127.0.0.1 serves a deployment
of an MLP fit on real iris rows, says at exit which deployments keep running and how to
stop them, and ``lepton deployments list|stop`` works on the database alone while no
server runs, and through the API while one does (``autoscale`` too, its policy kept
across the restart); and a canary release of a second version through the CLI, shown by the
CLI and the dashboard beside the main version, then aborted."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
from servers import LEPTON, Platform, ok, start_platform, stop_platform

import lepton as lp

pytestmark = pytest.mark.integration


def _lepton(home: Path, *args: str, server: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LEPTON_HOME": str(home), "COLUMNS": "200"}
    env.pop("LEPTON_SERVER_URL", None)
    if server is not None:
        env["LEPTON_SERVER_URL"] = server
    return subprocess.run(
        [LEPTON, *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _alive(pid: int) -> bool:
    try:  # a zombie waiting for a parent that is gone counts as gone
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _canary_through_the_cli_and_the_dashboard(home: Path, platform: Platform) -> None:
    """Deployment ``iris`` (iris-mlp:1, ready) gets a canary of iris-mlp:2 on half of its
    traffic; the CLI's table and the dashboard show both; ``--abort`` removes it. (The
    canary's routing, promotion and rollback are tests/integration/test_aiops.py's.)"""
    bad = _lepton(home, "deployments", "release", "iris", "2", "--canary", "1.5",
                  server=platform.url)  # fmt: skip
    assert bad.returncode == 2
    assert "--canary: the share of the traffic must be between 0 and 1" in bad.stderr
    negative = _lepton(home, "deployments", "release", "iris", "2", "--canary", "0.1",
                       "--promote-after", "-5", server=platform.url)  # fmt: skip
    assert negative.returncode == 2  # refused by the server, in the command's words
    assert "--promote-after: Input should be greater than or equal to 0" in negative.stderr
    unknown = _lepton(home, "deployments", "canary", "nope", server=platform.url)
    assert unknown.returncode == 2
    assert "no deployment named 'nope'" in unknown.stderr
    started = _lepton(home, "deployments", "release", "iris", "2", "--canary", "0.5",
                      "--promote-after", "3600", server=platform.url)  # fmt: skip
    assert started.returncode == 0, started.stderr
    assert "iris: iris-mlp:2 takes 50% of the traffic as iris-canary (" in started.stdout
    assert "unless an alert fires on it" in started.stdout
    with platform.client() as client:  # it need not be ready to be shown (nor aborted)
        page = client.get("/deployments/iris", headers={"accept": "text/html"})
        assert page.status_code == 200
        assert 'takes 50% of the traffic as <a href="/deployments/iris-canary">' in page.text
        assert "<th>canary (iris-mlp:2)</th>" in page.text
        assert 'id="canary-abort"' in page.text
        assert 'id="release-form"' not in page.text
        of = client.get("/deployments/iris-canary", headers={"accept": "text/html"})
        assert "This deployment is the canary of" in of.text
    shown = _lepton(home, "deployments", "canary", "iris", server=platform.url)
    assert shown.returncode == 0, shown.stderr
    rows = {cells[0]: cells[1:] for line in shown.stdout.splitlines()
            if len(cells := [c.strip() for c in re.split("[│┃]", line)[1:-1]]) == 3}  # fmt: skip
    assert rows.get("last 60 s") == ["main (iris-mlp:1)", "canary (iris-mlp:2)"], shown.stdout
    assert rows["share"] == ["50%", "50%"]
    assert rows["state"][0] == "ready"
    assert rows["state"][1] in ("starting", "ready")
    assert set(rows) >= {"requests/s", "error rate", "p95 ms", "proxy errors", "timeouts"}
    aborted = _lepton(home, "deployments", "canary", "iris", "--abort", server=platform.url)
    assert aborted.returncode == 0, aborted.stderr
    assert "iris: canary iris-mlp:2 stopped and deleted; iris-mlp:1 serves all" in aborted.stdout
    with platform.client() as client:
        assert client.get("/api/v1/deployments/iris-canary").status_code == 404
        assert client.get("/api/v1/deployments/iris/canary").status_code == 404
        assert ok(client.get("/api/v1/deployments/iris"))["ref"] == "iris-mlp:1"


def test_deployments_outlive_the_server_and_the_cli_stops_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("LEPTON_HOME", str(home))
    train = lp.data.load("iris", split="train")
    model = lp.models.MLP(in_features=4, num_classes=3, hidden=[8])
    lp.fit(model, train, epochs=1, batch_size=32, quiet=True, seed=0)
    lp.register(model, "iris-mlp")
    lp.register(model, "iris-mlp")  # version 2, for the canary

    platform = start_platform(home, tmp_path)
    try:
        with platform.client() as client:
            ok(
                client.post("/api/v1/deployments", json={"name": "iris", "model": "iris-mlp:1"}),
                201,
            )
            deadline = time.monotonic() + 180
            while (view := ok(client.get("/api/v1/deployments/iris")))["state"] != "ready":
                assert view["state"] != "failed", view
                assert time.monotonic() < deadline, view
                time.sleep(0.2)
        # while the server runs, the CLI asks it (the lease is the server's)
        listed = _lepton(home, "deployments", "list", "--json", server=platform.url)
        assert listed.returncode == 0, listed.stderr
        assert [(v["name"], v["state"]) for v in json.loads(listed.stdout)] == [("iris", "ready")]
        policy_args = ["--metric", "latency_ms_p95", "--high", "500", "--low", "50", "--max", "2"]
        scaled = _lepton(
            home, "deployments", "autoscale", "iris", *policy_args, server=platform.url
        )
        assert scaled.returncode == 0, scaled.stderr
        assert "iris: autoscaled between 1 and 2 replicas on latency_ms_p95" in scaled.stdout
        _canary_through_the_cli_and_the_dashboard(home, platform)
        platform.process.send_signal(signal.SIGTERM)
        platform.process.wait(timeout=60)
        said = platform.log
        assert "1 deployment(s) keep running after this server stops" in said, said
        assert f"iris (iris-mlp:1) on {view['url']}" in said
        assert "lepton deployments stop --all" in said
        assert _port_open(view["port"]), "the deployment outlives the server"

        # no server: the CLI works on the database, holding the lease meanwhile
        listed = _lepton(home, "deployments", "list")
        assert listed.returncode == 0, listed.stderr
        row = next(line for line in listed.stdout.splitlines() if " iris " in line)
        cells = [cell.strip() for cell in row.split("│")[1:7]]
        assert cells == ["iris", "iris-mlp:1", view["url"], "1", "running", "ready"], row
        wrong = _lepton(home, "deployments", "stop", "nope")
        assert wrong.returncode == 2
        assert "no deployment named 'nope'" in wrong.stderr
        assert "shows iris" in wrong.stderr
        alone = _lepton(home, "deployments", "release", "iris", "2", "--canary", "0.1")
        assert alone.returncode == 2  # no server would watch the canary
        assert "no `lepton server` runs on this platform" in alone.stderr
        assert "start it with `lepton server`" in alone.stderr
        stopped = _lepton(home, "deployments", "stop", "--all")
        assert stopped.returncode == 0, stopped.stderr
        assert "stopped iris (iris-mlp:1): stopped" in stopped.stdout
        assert not _port_open(view["port"])
        assert not _alive(view["pid"]), "the supervisor is gone, not only its port"

        # the next server finds it stopped, and leaves it so
        platform = start_platform(home, tmp_path)
        listed = _lepton(home, "deployments", "list", "--json", server=platform.url)
        assert [(v["name"], v["desired"], v["state"]) for v in json.loads(listed.stdout)] == [
            ("iris", "stopped", "stopped")
        ]
        again = _lepton(home, "deployments", "stop", "--all", server=platform.url)
        assert again.returncode == 0, again.stderr
        assert "no running deployments" in again.stdout
        pinned = _lepton(home, "deployments", "release", "iris", "2", server=platform.url)
        assert pinned.returncode == 0, pinned.stderr
        assert "iris: serves iris-mlp:2 when started again (it is stopped)" in pinned.stdout
        with platform.client() as client:  # the policy set through the API is kept
            policy = ok(client.get("/api/v1/deployments/iris/autoscale"))
        kept = [policy[k] for k in ("metric", "high", "max_replicas")]
        assert kept == ["latency_ms_p95", 500.0, 2]
    finally:
        stop_platform(platform, home)
