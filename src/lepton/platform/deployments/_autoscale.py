"""Autoscaling a deployment between a minimum and a maximum of replicas, on its queue depth
or a latency target, with hysteresis and a cool-down.

Opt-in per deployment: an :class:`AutoscalePolicy` names the figure, a high and a lower
low mark, and how long each must hold. :class:`ScaleDecider` is the decision alone (a
pure state machine over ``(replicas, value, now)``, unit-tested without a process):

* above ``high`` for ``up_for_s`` -> one replica more (up to ``max_replicas``);
* below ``low`` for ``down_for_s`` (longer) -> one fewer (down to ``min_replicas``);
* between the marks nothing changes and both timers restart (the hysteresis band), so
  a figure that hovers around one mark never makes the deployment flap;
* after any change, nothing for ``cooldown_s`` (the new replicas load, the figure
  settles);
* a count outside ``[min_replicas, max_replicas]`` is brought back at once.

:class:`Autoscaler` keeps the policies (``home/alerts/autoscale.json``), feeds each ready
deployment's live figure to the decider every AIOps round, scales through
:meth:`~._manager.DeploymentManager.scale`, and audits every change (actor
``autoscaler``). Users set, read and remove a policy through ``PUT|GET|DELETE
/api/v1/deployments/NAME/autoscale``, ``lepton deployments autoscale`` and the
deployment's dashboard page. What the decider sees now (the figure, how long it has held
above or below a mark, the cool-down left, the last change) is :class:`AutoscaleLive`,
part of ``GET /api/v1/deployments/NAME/autoscale`` and the page's panel.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from lepton._fs import atomic_write_bytes, private_dir
from lepton.errors import NoAutoscalePolicyError, NotFoundError
from lepton.platform.deployments._healing import audit
from lepton.platform.deployments._specs import MAX_REPLICAS, DeploymentView

if TYPE_CHECKING:
    from lepton.platform.deployments._manager import DeploymentManager

__all__ = [
    "AutoscaleDecision",
    "AutoscaleLive",
    "AutoscalePolicy",
    "AutoscaleRequest",
    "AutoscaleSettings",
    "AutoscaleStatus",
    "Autoscaler",
    "ScaleDecider",
]

log = logging.getLogger("lepton.platform.autoscale")


class AutoscaleSettings(BaseModel):
    """How a deployment is scaled: everything of an :class:`AutoscalePolicy` but the
    deployment's name (the API's and the dashboard's form take the name from the path)."""

    model_config = ConfigDict(extra="forbid")

    metric: Literal["queue_depth", "latency_ms_p95"] = Field(
        "queue_depth", description="queue_depth: requests waiting for a batch; "
        "latency_ms_p95: over window_s (no traffic counts as 0).",
    )  # fmt: skip
    high: float = Field(gt=0, description="Scale up when the figure stays above this.")
    low: float = Field(ge=0, description="Scale down when it stays below this (< high).")
    min_replicas: int = Field(1, ge=1, le=MAX_REPLICAS)
    max_replicas: int = Field(4, ge=1, le=MAX_REPLICAS)
    up_for_s: float = Field(10.0, ge=0, le=3600, description="Above high this long: +1.")
    down_for_s: float = Field(60.0, ge=0, le=86400, description="Below low this long: -1.")
    cooldown_s: float = Field(60.0, ge=0, le=86400, description="Between two changes.")
    window_s: float = Field(10.0, ge=1, le=600, description="Window of the figure, seconds.")

    @model_validator(mode="after")
    def _marks(self) -> AutoscaleSettings:
        if self.low >= self.high:
            raise ValueError(
                f"low ({self.low}) must be below high ({self.high}): the band between them "
                f"is the hysteresis that keeps the deployment from flapping"
            )
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"min_replicas ({self.min_replicas}) must be at most max_replicas "
                f"({self.max_replicas})"
            )
        return self


class AutoscalePolicy(AutoscaleSettings):
    """How one deployment is scaled (off unless a policy names it)."""

    deployment: str = Field(max_length=63, description="The deployment it scales.")


class AutoscaleRequest(AutoscaleSettings):
    """The body of ``PUT /api/v1/deployments/NAME/autoscale``: the settings, and the
    deployment's name only if it is the path's."""

    deployment: str | None = Field(
        None, max_length=63, description="Optional; when given, the path's name."
    )


class AutoscaleDecision(BaseModel):
    """The autoscaler's last change of a deployment's replica count."""

    from_replicas: int
    to_replicas: int
    reason: str = Field(description="Why, e.g. 'queue_depth 9 > 8 for 10 s'.")
    at: float = Field(description="When, unix seconds.")
    outcome: str | None = Field(None, description="Scaled, or why the scale failed.")


class AutoscaleLive(BaseModel):
    """What the autoscaler saw of a deployment at its last round (rounds run while the
    deployment is ready; timers restart when the policy is set again)."""

    value: float | None = Field(description="The policy's figure (None: unknown or no round).")
    seen_at: float | None = Field(description="When it was read, unix seconds.")
    above_since: float | None = Field(description="Above high since (unix s); None: it is not.")
    below_since: float | None = Field(description="Below low since (unix s); None: it is not.")
    held_s: float | None = Field(description="How long above (or below) at that round, s.")
    needed_s: float | None = Field(description="How long it must hold: up_for_s or down_for_s.")
    cooldown_left_s: float = Field(description="Seconds before another change may be made.")
    last: AutoscaleDecision | None = Field(description="The last change (since this start).")


class AutoscaleStatus(AutoscalePolicy):
    """A deployment's policy, and what its autoscaler sees now."""

    live: AutoscaleLive

    def describe(self) -> str:
        """``queue_depth 4 > 3 for 2.1 s of 5 s; cool-down 0 s left; last: 1 -> 2 at
        01:23:10 (why)``, in the server's local time."""
        s = self.live
        if s.value is None:
            now = f"{self.metric} not known yet"
        elif self.low <= s.value <= self.high:
            now = f"{self.metric} {s.value:.4g} within {self.low:g}-{self.high:g}: holding"
        else:
            mark = f"> {self.high:g}" if s.value > self.high else f"< {self.low:g}"
            now = f"{self.metric} {s.value:.4g} {mark}"
            if s.held_s is not None:
                now += f" for {s.held_s:.1f} s of {s.needed_s or 0:g} s"
        last = "no change yet"
        if s.last is not None:
            at = time.strftime("%H:%M:%S", time.localtime(s.last.at))
            last = f"{s.last.from_replicas} -> {s.last.to_replicas} at {at} ({s.last.reason})"
            if s.last.outcome and not s.last.outcome.startswith("scaled"):
                last += f": {s.last.outcome}"
        return f"{now}; cool-down {s.cooldown_left_s:.0f} s left; last: {last}"


@dataclass
class _Timers:
    above_since: float | None = None
    below_since: float | None = None
    changed_at: float | None = None
    value: float | None = None
    seen_at: float | None = None
    last: tuple[int, int, str, float] | None = None  # from, to, why, at (decider's clock)
    outcome: str | None = None


class ScaleDecider:
    """The scaling decision of each deployment (see the module docstring); no I/O."""

    def __init__(self) -> None:
        self._timers: dict[str, _Timers] = {}

    def decide(
        self, policy: AutoscalePolicy, replicas: int, value: float | None, now: float
    ) -> tuple[int, str] | None:
        """The replica count to move to and why, or ``None`` to stay.

        Args:
            replicas: The deployment's count now.
            value: The policy's figure now (``None``: unknown, e.g. not scraped yet).
            now: A monotonic clock, seconds.
        """
        t = self._timers.setdefault(policy.deployment, _Timers())
        t.value, t.seen_at = value, now
        if replicas < policy.min_replicas:
            return self._change(t, now, replicas, policy.min_replicas, "below min_replicas")
        if replicas > policy.max_replicas:
            return self._change(t, now, replicas, policy.max_replicas, "above max_replicas")
        if value is None:
            t.above_since = t.below_since = None
            return None
        if value > policy.high:
            t.below_since = None
            t.above_since = now if t.above_since is None else t.above_since
            held, wanted, target = now - t.above_since, policy.up_for_s, replicas + 1
            why = f"{policy.metric} {value:.4g} > {policy.high:g} for {held:.0f} s"
        elif value < policy.low:
            t.above_since = None
            t.below_since = now if t.below_since is None else t.below_since
            held, wanted, target = now - t.below_since, policy.down_for_s, replicas - 1
            why = f"{policy.metric} {value:.4g} < {policy.low:g} for {held:.0f} s"
        else:  # inside the band: hold, and both timers start again
            t.above_since = t.below_since = None
            return None
        if held < wanted or not policy.min_replicas <= target <= policy.max_replicas:
            return None
        if t.changed_at is not None and now - t.changed_at < policy.cooldown_s:
            return None
        return self._change(t, now, replicas, target, why)

    def _change(
        self, t: _Timers, now: float, replicas: int, target: int, why: str
    ) -> tuple[int, str]:
        t.above_since = t.below_since = None
        t.changed_at = now
        t.last, t.outcome = (replicas, target, why, now), None
        return target, why

    def record_outcome(self, name: str, outcome: str) -> None:
        """What came of the last change of ``name`` (scaled, or why not)."""
        if (t := self._timers.get(name)) is not None:
            t.outcome = outcome

    def live(self, policy: AutoscalePolicy, now: float, wall_now: float) -> AutoscaleLive:
        """What the decider holds of ``policy``'s deployment at ``now`` (its clock), with
        times as unix seconds (``wall_now`` is ``now`` on that clock)."""
        t = self._timers.get(policy.deployment) or _Timers()

        def wall(instant: float | None) -> float | None:
            return None if instant is None else wall_now - (now - instant)

        since = t.above_since if t.above_since is not None else t.below_since
        needed = policy.up_for_s if t.above_since is not None else policy.down_for_s
        last = None
        if t.last is not None:
            came, went, why, at = t.last
            last = AutoscaleDecision(from_replicas=came, to_replicas=went, reason=why,
                                     at=wall_now - (now - at), outcome=t.outcome)  # fmt: skip
        left = 0.0 if t.changed_at is None else policy.cooldown_s - (now - t.changed_at)
        return AutoscaleLive(
            value=t.value, seen_at=wall(t.seen_at), above_since=wall(t.above_since),
            below_since=wall(t.below_since),
            held_s=None if since is None else (now if t.seen_at is None else t.seen_at) - since,
            needed_s=None if since is None else needed, cooldown_left_s=max(0.0, left),
            last=last,
        )  # fmt: skip

    def forget(self, name: str, *, keep_last: bool = False) -> None:
        """Drop the timers of a deployment (deleted, or its policy removed); with
        ``keep_last`` (a new policy), only its last change is kept, to be shown."""
        t = self._timers.pop(name, None)
        if keep_last and t is not None and t.last is not None:
            self._timers[name] = _Timers(last=t.last, outcome=t.outcome)


class Autoscaler:
    """The policies, and one scaling round over the deployments (see the module doc)."""

    def __init__(self, manager: DeploymentManager) -> None:
        self.manager = manager
        self.decider = ScaleDecider()
        self.path = Path(manager.home) / "alerts" / "autoscale.json"
        self._lock = threading.Lock()
        self._policies: dict[str, AutoscalePolicy] = {}
        with contextlib.suppress(OSError, ValueError):
            raw = json.loads(self.path.read_text())
            self._policies = {p["deployment"]: AutoscalePolicy.model_validate(p) for p in raw}

    def policies(self) -> list[AutoscalePolicy]:
        """Every policy, by deployment."""
        with self._lock:
            return [self._policies[k] for k in sorted(self._policies)]

    def set_policy(self, policy: AutoscalePolicy) -> AutoscalePolicy:
        """Scale a deployment by ``policy`` from now on (replacing its previous one).

        Raises:
            NotFoundError: No deployment has that name.
        """
        self.manager.get(policy.deployment)
        with self._lock:
            self._policies[policy.deployment] = policy
            self._save()
        self.decider.forget(policy.deployment, keep_last=True)
        return policy

    def status(self, name: str) -> AutoscaleStatus:
        """Deployment ``name``'s policy and what its autoscaler sees now.

        Raises:
            NotFoundError: No deployment has that name.
            NoAutoscalePolicyError: It has no policy.
        """
        policy = self.policy(name)
        live = self.decider.live(policy, time.monotonic(), time.time())
        return AutoscaleStatus.model_validate({**policy.model_dump(), "live": live})

    def policy(self, name: str) -> AutoscalePolicy:
        """Deployment ``name``'s policy.

        Raises:
            NotFoundError: No deployment has that name.
            NoAutoscalePolicyError: It has no policy (it is not autoscaled).
        """
        self.manager.get(name)
        with self._lock:
            policy = self._policies.get(name)
        if policy is None:
            raise NoAutoscalePolicyError(
                f"deployment {name!r} has no autoscaling policy; set one with PUT "
                f"/api/v1/deployments/{name}/autoscale or `lepton deployments autoscale {name} "
                f"--high X --low Y`"
            )
        return policy

    def delete_policy(self, name: str) -> AutoscalePolicy:
        """Stop scaling deployment ``name``; answers its policy.

        Raises:
            NotFoundError: No deployment has that name (and no policy is left of one).
            NoAutoscalePolicyError: It has no policy.
        """
        with self._lock:
            policy = self._policies.pop(name, None)
            if policy is not None:
                self._save()
        if policy is None:
            self.policy(name)  # raises: no such deployment, or no policy
            raise NoAutoscalePolicyError(f"deployment {name!r} has no autoscaling policy")
        self.decider.forget(name)
        return policy

    def tick(self, views: list[DeploymentView]) -> None:
        """One round: each ready deployment with a policy, scaled if its decider says so;
        the policy of a deployment deleted meanwhile is dropped (a namesake created later
        starts without one)."""
        by_name = {v.name: v for v in views}
        for policy in self.policies():
            view = by_name.get(policy.deployment)
            if view is None:
                self._drop_if_gone(policy.deployment)
                continue
            if view.desired != "running" or view.state != "ready":
                continue
            try:
                self._round(policy, view)
            except Exception:
                log.exception("autoscaling deployment %s failed", view.name)

    def _drop_if_gone(self, name: str) -> None:
        try:
            self.manager.get(name)  # created since the round listed the deployments?
        except NotFoundError:
            with contextlib.suppress(NotFoundError):
                self.delete_policy(name)
                log.info("autoscaler: dropped the policy of deleted deployment %s", name)

    def _round(self, policy: AutoscalePolicy, view: DeploymentView) -> None:
        summary = self.manager.metrics(view.name, window_s=policy.window_s)
        value = summary.get(policy.metric)
        if value is None and policy.metric == "latency_ms_p95" and not summary.get("rps"):
            value = 0.0  # no traffic: nothing waits
        decision = self.decider.decide(policy, view.replicas, value, time.monotonic())
        if decision is None:
            return
        target, why = decision
        status, outcome = 200, f"scaled from {view.replicas} to {target} replicas"
        try:
            self.manager.scale(view.name, target, "autoscaler")
        except Exception as exc:  # a LeptonError (e.g. it was deleted) or a crash
            status, outcome = 500, f"scale to {target} failed: {getattr(exc, 'message', exc)}"
        self.decider.record_outcome(view.name, outcome)
        log.warning("autoscaler: deployment %s %s (%s)", view.name, outcome, why)
        audit(
            self.manager.database, "autoscaler", "deployment.scale", view.name, status,
            {"from": view.replicas, "to": target, "reason": why, "value": value,
             "outcome": outcome},
        )  # fmt: skip

    def _save(self) -> None:
        private_dir(self.path.parent)
        data = [p.model_dump() for p in self._policies.values()]
        atomic_write_bytes(self.path, json.dumps(data).encode())
