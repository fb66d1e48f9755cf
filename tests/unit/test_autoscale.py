"""The autoscaler's decision (hysteresis, hold times, cool-down, bounds) as a pure state
machine, its policies' refusals, and their file (a real folder)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from lepton.platform.deployments._autoscale import AutoscalePolicy, ScaleDecider


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
