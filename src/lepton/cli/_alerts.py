"""``lepton alerts``: the alert rules and the alerts of a running ``lepton server``.

``lepton alerts rules list|add|rm`` manage the rules (``/api/v1/alerts/rules``) and
``lepton alerts list [--firing]`` shows the alerts they raised. The server is
``--url`` (else ``LEPTON_SERVER_URL``, else http://127.0.0.1:8000); the token is read from
``--token-file`` (else ``LEPTON_TOKEN``, else ``LEPTON_HOME/admin-token``). Options a rule
leaves out take the server's defaults.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from lepton.errors import AlertRuleError

__all__ = ["alerts_app"]

console = Console(highlight=False, soft_wrap=True)
alerts_app = typer.Typer(
    help="Alert rules and alerts on the platform server (LEPTON_SERVER_URL, default "
    "http://127.0.0.1:8000; token from LEPTON_TOKEN or LEPTON_HOME/admin-token).",
    no_args_is_help=True,
)
rules_app = typer.Typer(help="Alert rules: list, add (or replace), remove.", no_args_is_help=True)
alerts_app.add_typer(rules_app, name="rules")

_URL = typer.Option(
    None, "--url", envvar="LEPTON_SERVER_URL", help="The platform server (http://127.0.0.1:8000)."
)
_TOKEN_FILE = typer.Option(
    None,
    "--token-file",
    help="A file holding the API token (else $LEPTON_TOKEN or the admin token).",
)
_JSON = typer.Option(False, "--json", help="Print the JSON answer.")
KINDS, OPS = ("metric", "drift", "anomaly"), (">", "<")
SEVERITIES = ("info", "warning", "critical")
ACTIONS = ("none", "restart", "scale", "rollback", "retrain")


def _client(url: str | None, token_file: Path | None) -> Any:
    from lepton.cli._serve import _token
    from lepton.platform._client import PlatformClient

    return PlatformClient(url, _token(token_file) if token_file is not None else None)


def _one_of(option: str, value: str | None, allowed: tuple[str, ...]) -> None:
    if value is not None and value not in allowed:
        raise AlertRuleError(f"{option} {value!r} is not one of {', '.join(allowed)}")


@rules_app.command("list")
def rules_list(
    url: str | None = _URL, token_file: Path | None = _TOKEN_FILE, as_json: bool = _JSON
) -> None:
    """List the alert rules, by name."""
    with _client(url, token_file) as client:
        page = client.request("GET", "alerts/rules", params={"limit": 500})
    if as_json:
        print(json.dumps(page["items"], indent=2))
        return
    table = Table("name", "deployment", "kind", "condition", "for s", "window s", "severity",
                  "action")  # fmt: skip
    for rule in page["items"]:
        watched = rule.get("metric") or rule["kind"]
        table.add_row(
            rule["name"], rule.get("deployment") or "(all)", rule["kind"],
            f"{watched} {rule['op']} {rule['threshold']:g}", f"{rule['for_s']:g}",
            f"{rule['window_s']:g}", rule["severity"], rule["action"],
        )  # fmt: skip
    console.print(
        table if page["items"] else "no alert rules; add one with `lepton alerts rules add`"
    )


@rules_app.command("add")
def rules_add(
    name: str = typer.Argument(..., help="Rule name (a-z, 0-9, _ and -)."),
    metric: str | None = typer.Option(
        None,
        help="kind=metric: the figure watched (latency_ms_p95, error_rate, rps, queue_depth, "
        "...; an unknown one is answered with the list); kind=anomaly: only that series.",
    ),
    kind: str | None = typer.Option(None, help="metric (default), drift or anomaly."),
    op: str | None = typer.Option(None, help="'>' (default) or '<'."),
    threshold: float | None = typer.Option(None, help="Fires when value op threshold."),
    deployment: str | None = typer.Option(None, "--deployment", "-d", help="Only this one."),
    for_s: float | None = typer.Option(None, "--for", help="Seconds it must hold to fire."),
    window_s: float | None = typer.Option(None, "--window", help="Window of the figure, s."),
    severity: str | None = typer.Option(None, help="info, warning (default) or critical."),
    action: str | None = typer.Option(
        None,
        help="Remediation when it fires: none (default), restart, scale, rollback, or retrain "
        "(submits --retrain-job).",
    ),
    retrain_job: str | None = typer.Option(
        None,
        "--retrain-job",
        help='action=retrain: the job spec to submit, as JSON, e.g. \'{"kind": "train", '
        '"model": "mlp", "data": "iris", "register": "iris-mlp"}\'.',
    ),
    max_replicas: int | None = typer.Option(None, help="action=scale: at most this many."),
    cooldown_s: float | None = typer.Option(None, "--cooldown", help="Seconds between actions."),
    within_s: float | None = typer.Option(
        None, "--within", help="action=rollback: only this many seconds after a release."
    ),
    min_requests: int | None = typer.Option(
        None, help="Judge only windows with at least this many requests (canaries, quiet hours)."
    ),
    webhook: str | None = typer.Option(None, help="POST alerts here (https; http on loopback)."),
    url: str | None = _URL,
    token_file: Path | None = _TOKEN_FILE,
    as_json: bool = _JSON,
) -> None:
    """Add an alert rule (one of the same name is replaced)."""
    _one_of("--kind", kind, KINDS)
    _one_of("--op", op, OPS)
    _one_of("--severity", severity, SEVERITIES)
    _one_of("--action", action, ACTIONS)
    job = None
    if retrain_job is not None:
        try:
            job = json.loads(retrain_job)
        except ValueError as exc:
            raise AlertRuleError(f"--retrain-job must be a JSON job spec: {exc}") from None
    if (kind or "metric") == "metric" and metric is None:
        raise AlertRuleError(
            f"rule {name!r}: kind=metric needs --metric (e.g. --metric error_rate --threshold 0.05)"
        )
    given = {
        "name": name, "metric": metric, "kind": kind, "op": op, "threshold": threshold,
        "deployment": deployment, "for_s": for_s, "window_s": window_s, "severity": severity,
        "action": action, "max_replicas": max_replicas, "cooldown_s": cooldown_s,
        "webhook": webhook, "retrain_job": job, "within_s": within_s,
        "min_requests": min_requests,
    }  # fmt: skip
    body = {key: value for key, value in given.items() if value is not None}
    with _client(url, token_file) as client:
        rule = client.request("POST", "alerts/rules", json=body)
    if as_json:
        print(json.dumps(rule, indent=2))
        return
    watched = rule.get("metric") or rule["kind"]
    console.print(
        f"rule {rule['name']}: {watched} {rule['op']} {rule['threshold']:g} for "
        f"{rule['for_s']:g} s on {rule.get('deployment') or 'every deployment'} "
        f"({rule['severity']}, action {rule['action']})"
    )


@rules_app.command("rm")
def rules_rm(
    name: str = typer.Argument(..., help="Rule name."),
    url: str | None = _URL,
    token_file: Path | None = _TOKEN_FILE,
) -> None:
    """Remove an alert rule (its alerts stay in the history)."""
    with _client(url, token_file) as client:
        rule = client.request("DELETE", f"alerts/rules/{name}")
    console.print(f"removed rule {rule['name']}")


@alerts_app.command("list")
def alerts_list(
    firing: bool = typer.Option(False, "--firing", help="Only the alerts firing now."),
    deployment: str | None = typer.Option(None, "--deployment", "-d", help="Only this one."),
    limit: int = typer.Option(50, min=1, max=500, help="At most this many, newest first."),
    url: str | None = _URL,
    token_file: Path | None = _TOKEN_FILE,
    as_json: bool = _JSON,
) -> None:
    """List the alerts, newest first: firing and resolved, with the action taken."""
    params: dict[str, Any] = {"limit": 500 if firing else limit}
    if deployment is not None:
        params["deployment"] = deployment
    with _client(url, token_file) as client:
        found = client.request("GET", "alerts", params=params)["items"]
    if firing:
        found = [a for a in found if a["state"] == "firing"][:limit]
    if as_json:
        print(json.dumps(found, indent=2))
        return
    table = Table("id", "rule", "deployment", "severity", "state", "value", "started", "action")
    for alert in found:
        table.add_row(
            alert["id"], alert["rule"], alert["deployment"], alert["severity"], alert["state"],
            f"{alert['value']:.4g} {alert['op']} {alert['threshold']:g}",
            _when(alert["started_at"]), alert.get("action") or "",
        )  # fmt: skip
    console.print(table if found else ("no alert firing" if firing else "no alerts"))


def _when(epoch: float) -> str:
    import time

    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch))
