"""The autoscaler's decision (hysteresis, hold times, cool-down, bounds) as a pure state
machine, its policies' refusals, and their file (a real folder); the policy through the
API, the dashboard form and ``lepton deployments autoscale``, on a stopped deployment of a
really registered model (no process); and a release time that outlives its manager (a
``lepton server`` restart)."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError
from typer.core import TyperGroup
from typer.testing import CliRunner

import lepton as lp
from lepton import registry
from lepton.cli._app import app as cli
from lepton.cli._app import load_command
from lepton.config import get_settings
from lepton.errors import ConfigError
from lepton.platform._app import Platform, create_app
from lepton.platform.deployments import DeploymentManager
from lepton.platform.deployments._autoscale import (
    AutoscalePolicy,
    Autoscaler,
    AutoscaleSettings,
    AutoscaleStatus,
    ScaleDecider,
)
from lepton.platform.deployments._store import DeploymentStore
from lepton.storage import Database

BASE = "http://127.0.0.1:8000"


def _policy(**changes: object) -> AutoscalePolicy:
    values: dict[str, object] = {
        "deployment": "web", "high": 10.0, "low": 2.0, "min_replicas": 1, "max_replicas": 3,
        "up_for_s": 5.0, "down_for_s": 20.0, "cooldown_s": 30.0,
    }  # fmt: skip
    return AutoscalePolicy.model_validate({**values, **changes})


def _run(
    decider: ScaleDecider, policy: AutoscalePolicy, replicas: int, values: list[float | None]
) -> tuple[int, list[tuple[int, int]]]:
    """Feed one value a second from t=0; apply each decision; answers the final count and
    the (second, new count) of each change."""
    changes = []
    for t, value in enumerate(values):
        decision = decider.decide(policy, replicas, value, float(t))
        if decision is not None:
            replicas = decision[0]
            changes.append((t, replicas))
    return replicas, changes


def test_scales_up_only_after_the_high_mark_held_for_up_for_s() -> None:
    policy = _policy()
    count, changes = _run(ScaleDecider(), policy, 1, [12.0] * 5 + [12.0])
    assert changes == [(5, 2)]  # held from t=0, 5 s at t=5
    count, changes = _run(ScaleDecider(), policy, 1, [12.0, 12.0, 5.0, 12.0, 12.0, 12.0])
    assert changes == []  # a dip into the band restarts the timer
    assert count == 1


def test_scales_down_only_below_the_lower_mark_for_longer() -> None:
    policy = _policy(cooldown_s=0)
    # 5 is below high but above low: the band holds the count however long it lasts
    count, changes = _run(ScaleDecider(), policy, 3, [5.0] * 100)
    assert (count, changes) == (3, [])
    count, changes = _run(ScaleDecider(), policy, 3, [1.0] * 19)
    assert changes == []  # 18 s below: not yet
    count, changes = _run(ScaleDecider(), policy, 3, [1.0] * 21)
    assert changes == [(20, 2)]


def test_a_figure_hovering_around_one_mark_does_not_flap() -> None:
    policy = _policy(up_for_s=0, down_for_s=0, cooldown_s=0)
    wobble = [9.0, 11.0] * 20  # around high: up once, then 9 is inside the band
    count, changes = _run(ScaleDecider(), policy, 1, wobble)
    assert changes == [(1, 2), (3, 3)]  # up to the max, never down
    assert count == 3


def test_the_cool_down_spaces_changes_and_bounds_are_kept() -> None:
    policy = _policy(up_for_s=0, cooldown_s=30.0)
    count, changes = _run(ScaleDecider(), policy, 1, [50.0] * 100)
    assert changes == [(0, 2), (30, 3)]  # then max_replicas holds it at 3
    assert count == 3
    decider = ScaleDecider()
    assert decider.decide(policy, 5, 0.0, 0.0) == (3, "above max_replicas")
    assert decider.decide(_policy(min_replicas=2), 1, None, 0.0) == (2, "below min_replicas")


def test_an_unknown_figure_holds_and_restarts_the_timers() -> None:
    policy = _policy(up_for_s=3.0)
    _, changes = _run(ScaleDecider(), policy, 1, [12.0, 12.0, None, 12.0, 12.0, 12.0, 12.0])
    assert changes == [(6, 2)]
    decision = ScaleDecider().decide(_policy(up_for_s=0), 1, 11.5, 0.0)
    assert decision is not None
    assert decision[1] == "queue_depth 11.5 > 10 for 0 s"


def test_the_live_state_says_how_long_a_mark_held_and_the_cool_down_left() -> None:
    policy, decider, wall = _policy(), ScaleDecider(), 1_000_000.0  # wall: unix time at `now`

    def said(now: float) -> str:
        live = decider.live(policy, now, wall)
        return AutoscaleStatus.model_validate({**policy.model_dump(), "live": live}).describe()

    untouched = decider.live(policy, 0.0, wall)
    assert (untouched.value, untouched.held_s, untouched.last) == (None, None, None)
    assert said(0.0) == "queue_depth not known yet; cool-down 0 s left; last: no change yet"
    assert decider.decide(policy, 1, 12.0, 10.0) is None
    assert decider.decide(policy, 1, 12.5, 12.1) is None
    live = decider.live(policy, 12.1, wall)
    assert (live.value, live.above_since, live.below_since) == (12.5, wall - 2.1, None)
    assert (live.held_s, live.needed_s, live.seen_at) == (pytest.approx(2.1), 5.0, wall)
    assert said(12.1) == "queue_depth 12.5 > 10 for 2.1 s of 5 s; cool-down 0 s left; " \
        "last: no change yet"  # fmt: skip
    assert decider.decide(policy, 1, 12.5, 15.0) == (2, "queue_depth 12.5 > 10 for 5 s")
    decider.record_outcome("web", "scaled from 1 to 2 replicas")
    live = decider.live(policy, 21.0, wall)
    assert live.last is not None
    assert (live.last.from_replicas, live.last.to_replicas, live.last.at) == (1, 2, wall - 6.0)
    assert live.last.outcome == "scaled from 1 to 2 replicas"
    assert live.cooldown_left_s == 24.0  # 30 s from the change at 15
    assert live.above_since is None  # the timer restarts after a change
    clock = time.strftime("%H:%M:%S", time.localtime(wall - 6.0))
    assert said(21.0) == (f"queue_depth 12.5 > 10; cool-down 24 s left; last: 1 -> 2 at "
                          f"{clock} (queue_depth 12.5 > 10 for 5 s)")  # fmt: skip
    decider.decide(policy, 2, 5.0, 22.0)  # inside the band
    assert said(22.0).startswith("queue_depth 5 within 2-10: holding; cool-down 23 s left")
    decider.decide(policy, 2, 1.0, 30.0)
    decider.decide(policy, 2, 1.5, 33.0)
    live = decider.live(policy, 40.0, wall)  # held as seen at the last round (33)
    assert (live.below_since, live.held_s, live.needed_s) == (wall - 10.0, 3.0, 20.0)
    decider.forget("web", keep_last=True)  # a new policy: timers restart, the change stays
    live = decider.live(policy, 40.0, wall)
    assert (live.value, live.cooldown_left_s) == (None, 0.0)
    assert live.last is not None
    assert live.last.to_replicas == 2
    decider.forget("web")
    assert decider.live(policy, 40.0, wall).last is None


def test_policies_refuse_a_band_upside_down_and_bounds_crossed() -> None:
    with pytest.raises(ValidationError, match=r"low .* must be below high"):
        _policy(low=10.0)
    with pytest.raises(ValidationError, match=r"min_replicas .* at most max_replicas"):
        _policy(min_replicas=4, max_replicas=2)
    with pytest.raises(ValidationError, match="less than or equal to 16"):
        _policy(max_replicas=17)


def test_policy_json_round_trips(tmp_path: Path) -> None:
    policy = _policy(metric="latency_ms_p95", high=250.0, low=80.0)
    path = tmp_path / "p.json"
    path.write_text(policy.model_dump_json())
    assert AutoscalePolicy.model_validate_json(path.read_text()) == policy


# -- users set it: API, dashboard, CLI -------------------------------------------------------


def _stopped_deployment(db: Database, name: str = "iris", versions: int = 1) -> None:
    """A deployment row of a really registered (untrained) model's version 1, stopped:
    everything but a process, which none of these tests needs."""
    for _ in range(versions):
        lp.register(lp.models.MLP(in_features=4, num_classes=3, hidden=[4]), "tiny", database=db)
    store = DeploymentStore(db, "127.0.0.1")
    store.insert(
        name=name, model_ref="tiny:1", version=registry.resolve("tiny:1", database=db),
        replicas=1, user="test", port_for=lambda taken: 8199,
    )  # fmt: skip
    store.update(name, None, desired="stopped", state="stopped")


def _as(platform: Platform, role: str) -> TestClient:
    user = platform.auth.create_user(f"{role}-user", role)  # type: ignore[arg-type]
    token = platform.auth.create_token(user.id, "t")[1]
    return TestClient(
        create_app(platform), base_url=BASE, headers={"Authorization": f"Bearer {token}"}
    )


def test_the_autoscale_api_sets_reads_and_removes_a_policy(client: Any, platform: Platform) -> None:
    _stopped_deployment(platform.db)
    url = "/api/v1/deployments/iris/autoscale"
    missing = client.get(url)
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "no_autoscale_policy"
    assert "lepton deployments autoscale iris" in missing.json()["error"]["message"]
    for answer in (
        client.get("/api/v1/deployments/nope/autoscale"),
        client.put("/api/v1/deployments/nope/autoscale", json={"high": 5, "low": 1}),
    ):
        assert answer.status_code == 404, answer.text
        assert answer.json()["error"]["code"] == "not_found"  # fmt: skip
    upside_down = client.put(url, json={"high": 5, "low": 9})
    assert upside_down.status_code == 422
    assert "low (9.0) must be below high (5.0)" in upside_down.json()["error"]["message"]
    unknown = client.put(url, json={"high": 5, "low": 1, "cpu": 3})
    assert unknown.status_code == 422
    other = client.put(url, json={"deployment": "web", "high": 5, "low": 1})
    assert other.status_code == 400
    assert other.json()["error"]["code"] == "deployment_error"
    assert "path names 'iris'" in other.json()["error"]["message"]

    body = {"metric": "latency_ms_p95", "high": 250, "low": 80, "max_replicas": 3}
    put = client.put(url, json=body)
    assert put.status_code == 200, put.text
    assert put.json() == {
        **AutoscaleSettings.model_validate(body).model_dump(),
        "deployment": "iris",
    }
    assert client.put(url, json={**body, "deployment": "iris"}).status_code == 200
    assert client.get(url).json()["high"] == 250.0
    # kept on disk: the autoscaler of the next server start reads it
    again = Autoscaler(platform.deployments).policies()
    assert [(p.deployment, p.metric, p.max_replicas) for p in again] == [
        ("iris", "latency_ms_p95", 3)
    ]

    with _as(platform, "viewer") as viewer:
        assert viewer.get(url).status_code == 200
        refused = viewer.put(url, json=body)
        assert refused.status_code == 403
        assert viewer.delete(url).status_code == 403
    removed = client.delete(url)
    assert removed.status_code == 200
    assert removed.json()["metric"] == "latency_ms_p95"
    assert client.get(url).json()["error"]["code"] == "no_autoscale_policy"
    assert client.delete(url).json()["error"]["code"] == "no_autoscale_policy"
    assert Autoscaler(platform.deployments).policies() == []

    audit = client.get("/api/v1/audit?limit=100").json()["items"]
    changes = [(e["actor"], e["action"].split()[0], e["target"], e["status"])
               for e in audit[::-1] if e["action"].endswith("/autoscale")]  # fmt: skip
    assert changes == [
        ("admin", "PUT", "/api/v1/deployments/nope/autoscale", 404),
        *[("admin", "PUT", "/api/v1/deployments/iris/autoscale", s) for s in (422, 422, 400)],
        *[("admin", "PUT", "/api/v1/deployments/iris/autoscale", 200)] * 2,
        ("viewer-user", "PUT", "/api/v1/deployments/iris/autoscale", 403),
        ("viewer-user", "DELETE", "/api/v1/deployments/iris/autoscale", 403),
        ("admin", "DELETE", "/api/v1/deployments/iris/autoscale", 200),
        ("admin", "DELETE", "/api/v1/deployments/iris/autoscale", 404),
    ]


def test_a_deleted_deployments_policy_is_dropped(platform: Platform) -> None:
    _stopped_deployment(platform.db)
    scaler = platform.deployments.aiops.autoscaler
    scaler.set_policy(AutoscalePolicy.model_validate({"deployment": "iris", "high": 5, "low": 1}))
    scaler.tick(platform.deployments.list()[0])
    assert [p.deployment for p in scaler.policies()] == ["iris"]  # stopped: kept, not scaled
    DeploymentStore(platform.db, "127.0.0.1").delete("iris")
    scaler.tick(platform.deployments.list()[0])
    assert scaler.policies() == []  # a namesake created later starts without it


def _notice(html: str) -> str:
    found = re.search(r'id="autoscale-error">(.*?)</p>', html, re.S)
    return found.group(1) if found else ""


def test_the_deployment_page_shows_sets_and_removes_the_policy(platform: Platform) -> None:
    _stopped_deployment(platform.db)
    platform.auth.bootstrap(get_settings().home)
    browser = TestClient(create_app(platform), base_url=BASE, headers={"accept": "text/html"})
    link = platform.auth.login_link_secret(platform.auth.admin_id())
    assert browser.get(f"/login?token={link}", follow_redirects=False).status_code == 303
    ours = {"origin": BASE}
    page = browser.get("/deployments/iris")
    assert page.status_code == 200
    assert "No autoscaling" in page.text
    assert 'name="up_for_s" value="10"' in page.text  # the policy's defaults to start from
    typed = {"metric": "queue_depth", "high": "4", "low": "7.5", "max_replicas": "3",
             "up_for_s": ""}  # fmt: skip
    bad = browser.post("/deployments/iris/autoscale", data=typed, headers=ours)
    assert bad.status_code == 422
    assert "low (7.5) must be below high (4.0)" in _notice(bad.text)
    assert 'name="low" value="7.5"' in bad.text  # what was typed is kept
    assert 'name="max_replicas" type="number" min="1" max="16" value="3"' in bad.text
    assert 'name="up_for_s" value=""' in bad.text  # left empty: the default applies
    done = browser.post("/deployments/iris/autoscale", data={**typed, "low": "1"},
                        headers=ours, follow_redirects=False)  # fmt: skip
    assert done.status_code == 303, _notice(done.text)
    assert platform.deployments.aiops.autoscaler.policy("iris").up_for_s == 10.0
    page = browser.get("/deployments/iris")
    assert "Scaled between 1 and 3 replicas on <code>queue_depth</code>" in page.text
    assert 'id="autoscale-off"' in page.text
    with _as(platform, "viewer") as viewer:
        seen = viewer.get("/deployments/iris", headers={"accept": "text/html"})
        assert "Scaled between 1 and 3" in seen.text
        assert 'id="autoscale"' not in seen.text  # the form is the editors'
        assert viewer.post("/deployments/iris/autoscale/delete").status_code == 403
    off = browser.post("/deployments/iris/autoscale/delete", headers=ours, follow_redirects=False)
    assert off.status_code == 303
    assert "No autoscaling" in browser.get("/deployments/iris").text


def test_the_live_state_of_real_rounds_in_the_api_and_on_the_page(
    client: Any, platform: Platform
) -> None:
    """Rounds of the real autoscaler on a deployment seen as ready (its row is stopped, so
    a scale only changes the count for its next start): the change, the figure and the
    timers are in ``GET .../autoscale`` under ``live`` and on the page's panel."""
    _stopped_deployment(platform.db)
    scaler = platform.deployments.aiops.autoscaler
    scaler.set_policy(_policy(deployment="iris", min_replicas=2, max_replicas=3))
    ready = platform.deployments.get("iris").model_copy(update={"state": "ready",
                                                                "desired": "running"})  # fmt: skip
    scaler.tick([ready])  # 1 replica, min 2: brought back at once
    assert platform.deployments.get("iris").replicas == 2
    answer = client.get("/api/v1/deployments/iris/autoscale")
    assert answer.status_code == 200, answer.text
    assert answer.json()["min_replicas"] == 2  # the policy's fields, as before
    live = answer.json()["live"]
    assert {k: live["last"][k] for k in ("from_replicas", "to_replicas", "reason", "outcome")} == {
        "from_replicas": 1, "to_replicas": 2, "reason": "below min_replicas",
        "outcome": "scaled from 1 to 2 replicas",
    }  # fmt: skip
    assert time.time() - 60 < live["last"]["at"] <= time.time()
    assert 0 < live["cooldown_left_s"] <= 30.0
    assert live["value"] == 0.0  # the queue the round read (none: nothing is served)
    assert time.time() - 60 < live["seen_at"] <= time.time()

    # a new policy on p95 latency: no traffic counts as 0 ms, below low; the change stays
    scaler.set_policy(_policy(deployment="iris", metric="latency_ms_p95", high=250.0,
                              low=80.0, down_for_s=60.0))  # fmt: skip
    scaler.tick([ready.model_copy(update={"replicas": 2})])
    live = scaler.status("iris").live
    assert (live.value, live.held_s, live.needed_s, live.cooldown_left_s) == (0.0, 0.0, 60.0, 0.0)
    assert live.below_since is not None
    assert live.above_since is None
    assert live.last is not None
    assert live.last.to_replicas == 2
    with _as(platform, "viewer") as viewer:
        page = viewer.get("/deployments/iris", headers={"accept": "text/html"})
    assert page.status_code == 200
    shown = re.search(r'<p id="autoscale-live">Now: (.*?)</p>', page.text, re.S)
    assert shown is not None
    said = r"latency_ms_p95 0 &lt; 80 for 0.0 s of 60 s; cool-down 0 s left; last: 1 -&gt; 2 "
    assert re.match(said + r"at \d\d:\d\d:\d\d \(below min_replicas\)", shown.group(1))


def test_lepton_deployments_autoscale_without_a_server(platform: Platform) -> None:
    _stopped_deployment(platform.db)
    runner = CliRunner()
    run = runner.invoke(cli, ["deployments", "autoscale", "iris", "--show"])
    assert run.exit_code == 0, run.output
    assert "iris: no autoscaling" in run.output
    run = runner.invoke(cli, ["deployments", "autoscale", "iris", "--high", "8", "--low",
                              "1", "--max", "3", "--cooldown", "30"])  # fmt: skip
    assert run.exit_code == 0, run.output
    assert "iris: autoscaled between 1 and 3 replicas on queue_depth" in run.output
    assert "cool-down 30 s" in run.output
    shown = runner.invoke(cli, ["deployments", "autoscale", "iris", "--show", "--json"])
    assert json.loads(shown.output) == {
        **AutoscaleSettings.model_validate(
            {"high": 8, "low": 1, "max_replicas": 3, "cooldown_s": 30}
        ).model_dump(),
        "deployment": "iris",
    }
    # the file the server reads at its next start
    assert [p.high for p in Autoscaler(platform.deployments).policies()] == [8.0]
    bad = runner.invoke(cli, ["deployments", "autoscale", "iris", "--high", "1", "--low",
                              "2", "--min", "5", "--max", "2"])  # fmt: skip
    assert isinstance(bad.exception, ConfigError)
    assert "low (2.0) must be below high (1.0)" in bad.exception.message
    both = runner.invoke(cli, ["deployments", "autoscale", "iris", "--show", "--off"])
    assert isinstance(both.exception, ConfigError)
    assert "one of the three" in both.exception.message
    nope = runner.invoke(cli, ["deployments", "autoscale", "nope", "--show"])
    assert "no deployment named 'nope'" in str(nope.exception)
    off = runner.invoke(cli, ["deployments", "autoscale", "iris", "--off"])
    assert off.exit_code == 0, off.output
    assert "iris: autoscaling off" in off.output
    assert Autoscaler(platform.deployments).policies() == []


def test_the_cli_states_the_policys_own_defaults() -> None:
    group = load_command("deployments")
    assert isinstance(group, TyperGroup)
    helps = {p.name: getattr(p, "help", "") or "" for p in group.commands["autoscale"].params}
    flags = {"min_replicas": "min_replicas", "max_replicas": "max_replicas",
             "up_for_s": "up_for", "down_for_s": "down_for", "cooldown_s": "cooldown",
             "window_s": "window"}  # fmt: skip
    for field, option in flags.items():
        default = AutoscaleSettings.model_fields[field].default
        assert f"(default {default:g})" in helps[option], (field, helps[option])


# -- the release time -----------------------------------------------------------------------


def test_the_release_time_outlives_the_manager(platform: Platform) -> None:
    db, home = platform.db, get_settings().home
    _stopped_deployment(db, versions=2)
    first = DeploymentManager(db, home)
    assert not first.healer.released_within("iris", 3600)  # created, never released
    assert first.healer.released_within("iris", None)  # no window: any version
    assert first.healer.release("iris", "2", "ada").version == 2
    assert first.healer.released_within("iris", 3600)
    first.shutdown()
    second = DeploymentManager(db, home)  # a new server over the same database and home
    assert second.healer.released_within("iris", 3600)
    assert not second.healer.released_within("iris", -1.0)
    assert second.healer.rollback("iris", "aiops").version == 1
    assert not second.healer.released_within("iris", 3600)  # a rollback is no release
    second.shutdown()
    third = DeploymentManager(db, home)
    assert not third.healer.released_within("iris", 3600)
    third.healer.release("iris", "2", "ada")
    DeploymentStore(db, "127.0.0.1").update("iris", None, version=1)  # changed behind its back
    assert not third.healer.released_within("iris", 3600)  # not the version released
    third.shutdown()
