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
deployment's dashboard page.
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
    "AutoscalePolicy",
    "AutoscaleRequest",
    "AutoscaleSettings",
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


@dataclass
class _Timers:
    above_since: float | None = None
    below_since: float | None = None
    changed_at: float | None = None


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
        if replicas < policy.min_replicas:
            return self._change(t, now, policy.min_replicas, "below min_replicas")
        if replicas > policy.max_replicas:
            return self._change(t, now, policy.max_replicas, "above max_replicas")
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
        return self._change(t, now, target, why)

    def _change(self, t: _Timers, now: float, target: int, why: str) -> tuple[int, str]:
        t.above_since = t.below_since = None
        t.changed_at = now
        return target, why

    def forget(self, name: str) -> None:
        """Drop the timers of a deployment (deleted, or its policy removed)."""
        self._timers.pop(name, None)


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
        self.decider.forget(policy.deployment)
        return policy

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
