"""``lepton deployments``: list and stop the platform's deployments and set their
autoscaling policies, with or without a running server; release a new version, at once or
as a canary on a share of the traffic, through a running server.

Deployments outlive ``lepton server``: when it stops they keep serving, and the next start
adopts them. With no server running, these commands work on the platform's database
themselves, holding the server lease meanwhile (a server started at that moment waits
for it, so the two never fight over a process). With a server running, they ask it
through its API (LEPTON_SERVER_URL, token from LEPTON_TOKEN or LEPTON_HOME/admin-token).
Releases and canaries (:mod:`lepton.cli._releases`) need the server: its monitor watches a
canary, promotes it or stops it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.table import Table

from lepton.cli._releases import canary_command, release_command
from lepton.errors import ConfigError, LeptonError, NoAutoscalePolicyError, ServerBusyError

if TYPE_CHECKING:
    from lepton.platform.deployments import DeploymentManager
    from lepton.platform.deployments._autoscale import AutoscalePolicy

__all__ = ["deployments_app"]

console = Console(highlight=False, soft_wrap=True)
deployments_app = typer.Typer(
    help="The platform's deployments: list them, stop them, autoscale them (also when no "
    "server runs), release a new version (at once or as a canary).",
    no_args_is_help=True,
)
_ALL = 10_000


@contextmanager
def _local() -> Iterator[DeploymentManager | None]:
    """The platform's deployments through its database while no server manages them
    (the lease held meanwhile), or ``None`` when a server runs: then ask it."""
    from lepton.config import get_settings
    from lepton.platform._lease import ManagerLease
    from lepton.platform.deployments import DeploymentManager
    from lepton.storage import open_database

    db = open_database()
    lease = ManagerLease(db, "`lepton deployments` (command line)")
    try:
        lease.acquire()
    except ServerBusyError:
        db.dispose()
        yield None
        return
    manager = DeploymentManager(db, get_settings().home)
    try:
        yield manager
    finally:
        manager.shutdown()
        lease.release()
        db.dispose()


def _views(manager: DeploymentManager | None) -> list[dict[str, Any]]:
    if manager is not None:
        return [v.model_dump() for v in manager.list(0, _ALL)[0]]
    from lepton.platform import PlatformClient

    views: list[dict[str, Any]] = []
    with PlatformClient() as client:
        while True:  # the API answers pages of at most 500
            page = client.request("GET", f"/deployments?offset={len(views)}&limit=500")
            views += page["items"]
            if not page["items"] or len(views) >= page["total"]:
                return views


@deployments_app.command("list")
def deployments_list(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """List deployments: what they serve, where, and their state."""
    with _local() as manager:
        views = _views(manager)
    if as_json:
        print(json.dumps(views, indent=2))
        return
    if not views:
        console.print("no deployments")
        return
    table = Table("name", "serves", "url", "replicas", "desired", "state", "pid", "restarts")
    for v in views:
        table.add_row(
            v["name"], v["ref"], v["url"], str(v["replicas"]), v["desired"], v["state"],
            str(v["pid"] or "-"), str(v["restarts"]),
        )  # fmt: skip
    console.print(table)


@deployments_app.command("stop")
def deployments_stop(
    names: list[str] = typer.Argument(None, help="Deployments to stop (or --all)."),
    every: bool = typer.Option(False, "--all", help="Stop every running deployment."),
) -> None:
    """Stop deployments: their replicas drain the requests in progress, then exit. They
    stay stopped across server restarts until started again (API or dashboard)."""
    if bool(names) == every:
        raise ConfigError("name the deployments to stop, or pass --all (not both)")
    with _local() as manager:
        views = {v["name"]: v for v in _views(manager)}
        wanted = [n for n, v in views.items() if v["desired"] == "running"] if every else names
        unknown = [n for n in wanted if n not in views]
        if unknown:
            raise ConfigError(
                f"no deployment named {', '.join(map(repr, unknown))}; "
                f"`lepton deployments list` shows {', '.join(views) or 'none'}"
            )
        if not wanted:
            console.print("no running deployments")
        for name in wanted:
            if manager is not None:
                state = manager.stop(name, "cli").state
            else:
                from lepton.platform import PlatformClient

                with PlatformClient() as client:
                    state = client.request("POST", f"/deployments/{name}/stop")["state"]
            console.print(f"stopped {name} ({views[name]['ref']}): {state}")


_METRICS = ("queue_depth", "latency_ms_p95")
# the option of each policy field (for the problems found in what was given)
_FLAGS = {
    "min_replicas": "--min", "max_replicas": "--max", "up_for_s": "--up-for",
    "down_for_s": "--down-for", "cooldown_s": "--cooldown", "window_s": "--window",
}  # fmt: skip


@deployments_app.command("autoscale")
def deployments_autoscale(
    name: str = typer.Argument(..., help="The deployment."),
    metric: str | None = typer.Option(
        None,
        "--metric",
        help=f"The figure it scales on: {' or '.join(_METRICS)} (default: the first).",
    ),
    high: float | None = typer.Option(
        None, "--high", help="One replica more when the figure stays above this."
    ),
    low: float | None = typer.Option(
        None, "--low", help="One fewer when it stays below this (< --high)."
    ),
    min_replicas: int | None = typer.Option(None, "--min", help="Fewest replicas (default 1)."),
    max_replicas: int | None = typer.Option(None, "--max", help="Most replicas (default 4)."),
    up_for: float | None = typer.Option(
        None, "--up-for", help="Seconds above --high before one more (default 10)."
    ),
    down_for: float | None = typer.Option(
        None, "--down-for", help="Seconds below --low before one fewer (default 60)."
    ),
    cooldown: float | None = typer.Option(
        None, "--cooldown", help="Seconds between two changes (default 60)."
    ),
    window: float | None = typer.Option(
        None, "--window", help="Window of the figure, seconds (default 10)."
    ),
    show: bool = typer.Option(False, "--show", help="Print its policy instead of setting one."),
    off: bool = typer.Option(
        False, "--off", help="Stop autoscaling it (replicas stay as they are)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the policy as JSON."),
) -> None:
    """Autoscale a deployment between --min and --max replicas on its queue depth or p95
    latency (with hysteresis and a cool-down), show its policy (--show), or stop (--off).

    Options left out take the policy's defaults. Autoscaling runs in `lepton server`;
    set without a server, the policy applies from its next start.
    """
    given = {"metric": metric, "high": high, "low": low, "min_replicas": min_replicas,
             "max_replicas": max_replicas, "up_for_s": up_for, "down_for_s": down_for,
             "cooldown_s": cooldown, "window_s": window}  # fmt: skip
    settings = {k: v for k, v in given.items() if v is not None}
    if show + off + bool(settings) != 1:
        raise ConfigError(
            "give a policy (--high X --low Y, and --metric, --min, --max... if needed), or "
            "--show, or --off: one of the three"
        )
    policy = _policy(name, settings) if settings else None
    with _local() as manager:
        try:
            answer: dict[str, Any] | None = _autoscale(manager, name, policy, off=off)
        except NoAutoscalePolicyError:
            answer = None
    if as_json:
        print(json.dumps(answer, indent=2))
    elif answer is None:
        console.print(f"{name}: no autoscaling")
    elif off:
        console.print(f"{name}: autoscaling off (it keeps its {_replicas(answer)})")
    else:
        console.print(
            f"{name}: {'autoscaled' if policy else 'autoscaling'} between "
            f"{answer['min_replicas']} and {answer['max_replicas']} replicas on "
            f"{answer['metric']}: one more above {answer['high']:g} for {answer['up_for_s']:g} "
            f"s, one fewer below {answer['low']:g} for {answer['down_for_s']:g} s, cool-down "
            f"{answer['cooldown_s']:g} s, window {answer['window_s']:g} s"
        )


def _replicas(policy: dict[str, Any]) -> str:
    return "replicas" if policy["max_replicas"] > 1 else "replica"


def _policy(name: str, settings: dict[str, Any]) -> AutoscalePolicy:
    """The policy the options describe, checked here (the server checks it again)."""
    from pydantic import ValidationError

    from lepton.platform.deployments._autoscale import AutoscalePolicy

    try:
        return AutoscalePolicy.model_validate({**settings, "deployment": name})
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            field = ".".join(str(p) for p in error["loc"])
            flag = _FLAGS.get(field, f"--{field}" if field else "")
            what = str(error["msg"]).removeprefix("Value error, ")
            problems.append(f"{flag}: {what}" if flag else what)
        raise ConfigError("; ".join(problems)) from None


def _autoscale(
    manager: DeploymentManager | None, name: str, policy: AutoscalePolicy | None, *, off: bool
) -> dict[str, Any]:
    """Set (``policy``), remove (``off``) or read deployment ``name``'s policy, on the
    database or through the server; answers the policy as JSON.

    Raises:
        NoAutoscalePolicyError: It has none (to read or to remove).
    """
    if manager is not None:
        scaler = manager.aiops.autoscaler
        if off:
            found = scaler.delete_policy(name)
        else:
            found = scaler.policy(name) if policy is None else scaler.set_policy(policy)
        return found.model_dump()
    from lepton.platform import PlatformClient

    path = f"/deployments/{name}/autoscale"
    with PlatformClient() as client:
        try:
            if off:
                answer = client.request("DELETE", path)
            elif policy is None:
                answer = client.request("GET", path)
            else:
                answer = client.request("PUT", path, json=policy.model_dump())
        except LeptonError as exc:
            if exc.code == NoAutoscalePolicyError.code:
                raise NoAutoscalePolicyError(exc.message) from None
            raise
    return dict(answer)


# through a running server only: see lepton.cli._releases
deployments_app.command("release")(release_command)
deployments_app.command("canary")(canary_command)
