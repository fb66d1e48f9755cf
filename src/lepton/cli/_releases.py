"""``lepton deployments release|canary``: serve another version of a deployment's model, on
every replica at once or as a canary on a share of the traffic first, and show, promote or
stop that canary.

These go through a running ``lepton server`` (LEPTON_SERVER_URL, token from LEPTON_TOKEN
or LEPTON_HOME/admin-token): its monitor watches a canary, promotes it when its time comes
or stops it when an alert fires on it, so without one they refuse and say to start it.
The commands are registered on ``lepton deployments`` by :mod:`lepton.cli._deployments`.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.table import Table

from lepton.errors import (
    ConfigError,
    LeptonError,
    NotFoundError,
    PlatformError,
    ServerBusyError,
)

if TYPE_CHECKING:
    from lepton.platform import PlatformClient

__all__ = ["canary_command", "release_command"]

console = Console(highlight=False, soft_wrap=True)
# the figures a canary is judged on (Canary.figures' keys), as the table names them
_WATCHED = (("rps", "requests/s"), ("error_rate", "error rate"), ("latency_ms_p95", "p95 ms"),
            ("proxy_error_rate", "proxy errors"), ("timeouts", "timeouts"))  # fmt: skip
_FLAGS = {"model": "MODEL_REF", "share": "--canary", "promote_after_s": "--promote-after"}


def _server() -> PlatformClient:
    """A client of the ``lepton server`` that manages this platform.

    Raises:
        PlatformError: None runs on the platform's database (no one would watch a canary).
    """
    from lepton.platform import PlatformClient
    from lepton.platform._lease import ManagerLease
    from lepton.storage import open_database

    db = open_database()
    lease = ManagerLease(db, "`lepton deployments` (command line)")
    try:
        lease.acquire()
    except ServerBusyError:
        return PlatformClient()  # a server holds the lease: ask it
    finally:
        if lease.held:
            lease.release()
        db.dispose()
    raise PlatformError(
        "no `lepton server` runs on this platform: releases and canaries go through it (its "
        "monitor watches a canary, promotes it or stops it); start it with `lepton server`, "
        "then run this again"
    )


def _body(model: str, share: float | None, promote_after: float | None) -> dict[str, Any]:
    """The request the options describe; the server checks the rest of it (the request
    models are the server's: importing them here would cost the command seconds)."""
    if share is None and promote_after is not None:
        raise ConfigError("--promote-after goes with --canary SHARE (a plain release is at once)")
    if share is not None and not 0 < share < 1:
        raise ConfigError(
            f"--canary: the share of the traffic must be between 0 and 1 (0.1 is 10%), got "
            f"{share:g}; to serve the version on all the traffic now, leave --canary out"
        )
    given = {"model": model, "share": share, "promote_after_s": promote_after}
    return {k: v for k, v in given.items() if v is not None}


def _as_options(exc: LeptonError, name: str) -> LeptonError:
    """The server's refusal of a request's field, or of its deployment's name, in the
    command's own words."""
    if exc.code == NotFoundError.code:
        return _unknown(name)
    if exc.code != "invalid_request":
        return exc
    message = exc.message.removeprefix("422 invalid_request: ")
    for field, flag in _FLAGS.items():
        message = message.replace(f"body.{field}", flag)
    return ConfigError(message)


def _unknown(name: str) -> NotFoundError:
    return NotFoundError(f"no deployment named {name!r}; `lepton deployments list` shows them")


def release_command(
    name: str = typer.Argument(..., help="The deployment."),
    model: str = typer.Argument(
        ...,
        metavar="MODEL_REF",
        help="The version to serve: 3, iris-mlp:3 or iris-mlp@staging (of the model the "
        "deployment serves).",
    ),
    share: float | None = typer.Option(
        None,
        "--canary",
        metavar="SHARE",
        help="Serve it first on this share of the traffic (between 0 and 1: 0.1 is 10%), as "
        "deployment NAME-canary; the alert rules naming NAME judge it on its own figures.",
    ),
    promote_after: float | None = typer.Option(
        None,
        "--promote-after",
        metavar="SECONDS",
        help="With --canary: promote it (all the traffic) this long after its start unless "
        "an alert fires on it (default 600).",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the server's answer as JSON."),
) -> None:
    """Serve another version of a deployment's model: on every replica now (they restart),
    or with --canary on a share of the traffic first, promoted after --promote-after seconds
    unless an alert fires on it, stopped by a firing `rollback` rule.

    `lepton deployments canary NAME` shows the canary beside the main version, and promotes
    or stops it. Needs a running `lepton server`.
    """
    body = _body(model, share, promote_after)
    with _server() as client:
        path = f"/deployments/{name}/{'release' if share is None else 'canary'}"
        try:
            answer = client.request("POST", path, json=body)
        except LeptonError as exc:
            raise _as_options(exc, name) from None
    if as_json:
        print(json.dumps(answer, indent=2))
    elif share is None and answer["desired"] != "running":
        console.print(f"{name}: serves {answer['ref']} when started again (it is stopped)")
    elif share is None:
        console.print(
            f"{name}: serves {answer['ref']} on every replica from now ({answer['state']}: "
            f"they restart on it)"
        )
    else:
        console.print(
            f"{name}: {answer['ref']} takes {100 * answer['share']:g}% of the traffic as "
            f"{answer['canary']} ({answer['state']}); {_promotion(answer)}"
        )


def _promotion(canary: dict[str, Any]) -> str:
    """When the canary is promoted, in words."""
    if canary["promoting"]:
        return "being promoted: it takes all the traffic while the main version restarts"
    at = time.localtime(canary["promote_at"])
    today = at[:3] == time.localtime()[:3]
    return (
        f"promoted at {time.strftime('%H:%M:%S' if today else '%Y-%m-%d %H:%M:%S', at)} "
        f"unless an alert fires on it"
    )


def canary_command(
    name: str = typer.Argument(..., help="The (main) deployment."),
    promote: bool = typer.Option(
        False, "--promote", help="Promote it now: the deployment restarts on its version."
    ),
    abort: bool = typer.Option(
        False, "--abort", help="Stop and delete it: the main version serves all the traffic."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the server's answer as JSON."),
) -> None:
    """Show a deployment's canary release (its version, share of the traffic, state, when
    it is promoted, and both versions' figures over the last minute side by side), or
    promote it now (--promote), or stop it (--abort). Needs a running `lepton server`."""
    if promote and abort:
        raise ConfigError("--promote or --abort, not both")
    with _server() as client:
        try:
            main = client.request("GET", f"/deployments/{name}")
        except NotFoundError:
            raise _unknown(name) from None
        path = f"/deployments/{name}/canary"
        try:
            if promote:
                answer = client.request("POST", f"{path}/promote")
            elif abort:
                answer = client.request("DELETE", path)
            else:
                answer = client.request("GET", path)
        except NotFoundError:
            answer = None  # the deployment exists (asked above): it has no canary
    if answer is None and (promote or abort):
        raise NotFoundError(
            f"deployment {name!r} has no canary to {'promote' if promote else 'abort'}"
        )
    if as_json:
        print(json.dumps(answer, indent=2))
    elif answer is None:
        console.print(
            f"{name}: no canary (it serves {main['ref']}); start one with `lepton deployments "
            f"release {name} VERSION --canary 0.1`"
        )
    elif promote:
        console.print(
            f"{name}: promoting {answer['ref']}: it restarts on it while its canary takes all "
            f"the traffic; the canary is deleted once {name} is ready"
        )
    elif abort:
        console.print(
            f"{name}: canary {answer['ref']} stopped and deleted; {main['ref']} serves all the "
            f"traffic"
        )
    else:
        _show(main, answer)


def _show(main: dict[str, Any], canary: dict[str, Any]) -> None:
    """The canary beside the main version: share, state, then the watched figures."""
    console.print(
        f"{main['name']}: canary {canary['ref']} as {canary['canary']}; {_promotion(canary)}"
    )
    share = 1.0 if canary["promoting"] else canary["share"]
    table = Table("last 60 s", f"main ({main['ref']})", f"canary ({canary['ref']})")
    table.add_row("share", f"{100 * (1 - share):g}%", f"{100 * share:g}%")
    table.add_row("state", main["state"], canary["state"])
    figures = canary["figures"]
    for key, label in _WATCHED:
        table.add_row(label, *(_figure(key, figures.get(side, {}).get(key))
                               for side in ("main", "canary")))  # fmt: skip
    console.print(table)


def _figure(key: str, value: float | None) -> str:
    if value is None:
        return "-"
    if key.endswith("error_rate"):
        return f"{100 * value:.1f}%"
    return f"{value:g}" if key == "timeouts" else f"{value:.1f}"
