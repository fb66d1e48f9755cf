"""``lepton deployments``: list and stop the platform's deployments, with or without a
running server.

Deployments outlive ``lepton server``: when it stops they keep serving, and the next start
adopts them. With no server running, these commands work on the platform's database
themselves, holding the server lease meanwhile (a server started at that moment waits
for it, so the two never fight over a process). With a server running, they ask it
through its API (LEPTON_SERVER_URL, token from LEPTON_TOKEN or LEPTON_HOME/admin-token).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.table import Table

from lepton.errors import ConfigError, ServerBusyError

if TYPE_CHECKING:
    from lepton.platform.deployments import DeploymentManager

__all__ = ["deployments_app"]

console = Console(highlight=False, soft_wrap=True)
deployments_app = typer.Typer(
    help="The platform's deployments: list them, stop them (also when no server runs).",
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
        manager.shutdown(stop_deployments=False)
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
