"""``lepton server`` (the platform) and ``lepton users`` (accounts and tokens)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.table import Table

from lepton.config import get_settings
from lepton.errors import ConfigError

if TYPE_CHECKING:
    from lepton.platform._auth import Auth

__all__ = ["server", "users_app"]

console = Console(highlight=False, soft_wrap=True)


def server(
    host: str = typer.Option("127.0.0.1", help="Address to bind (loopback by default)."),
    port: int = typer.Option(8000, help="Port to bind."),
    allowed_host: list[str] = typer.Option(
        [], "--allowed-host", help="Extra Host header to accept (a DNS name or proxy), repeatable."
    ),
    max_body_mb: float = typer.Option(256.0, help="Largest request body accepted (MB)."),
    demo: bool = typer.Option(
        False, help="On an empty home: train the ConvNet on MNIST as a job, register, deploy it."
    ),
    demo_epochs: int = typer.Option(2, help="Epochs of the demo's training job."),
    login_link: bool = typer.Option(
        False, "--login-link", help="Print a fresh one-time dashboard link and exit."
    ),
    executor: str = typer.Option(
        "local", help="What runs jobs: local (subprocesses) or ray (actors on a Ray cluster)."
    ),
    ray_address: str | None = typer.Option(
        None,
        help="The Ray cluster's head, HOST:PORT (default: RAY_ADDRESS); with --executor ray.",
    ),
) -> None:
    """Run the Lepton platform: REST API (/api/v1, docs at /docs), jobs, deployments, dashboard.

    Authentication is always on, loopback included. At the first start the server creates
    the `admin` user and writes its token to LEPTON_HOME/admin-token (mode 0600), which the
    CLI and client read by themselves; it prints a one-time link that signs the browser in.
    """
    from lepton.platform._app import Platform, ServerConfig
    from lepton.platform._main import login_link as make_link
    from lepton.platform._main import run_server
    from lepton.storage import open_database

    if not 0 < port < 65536:
        raise ConfigError(f"--port must be 1-65535, got {port}")
    if max_body_mb <= 0:
        raise ConfigError(f"--max-body-mb must be positive, got {max_body_mb}")
    if executor not in ("local", "ray"):
        raise ConfigError(f"--executor must be local or ray, got {executor!r}")
    if ray_address is not None and executor != "ray":
        raise ConfigError("--ray-address is only used with --executor ray; add --executor ray")
    config = ServerConfig(
        host=host,
        port=port,
        allowed_hosts=list(allowed_host),
        max_body_bytes=int(max_body_mb * 1024 * 1024),
        executor=executor,
        ray_address=ray_address,
    )
    if login_link:
        # a link needs no job engine: never connect to a Ray cluster for it
        local = ServerConfig(host=host, port=port, allowed_hosts=list(allowed_host))
        platform = Platform(open_database(), get_settings().home, local)
        platform.auth.bootstrap(get_settings().home)
        print(make_link(platform))
        return
    if host not in ("127.0.0.1", "localhost", "::1"):
        console.print(
            f"[yellow]note[/]: binding {host}: every request still needs a token, but this "
            f"server speaks plain HTTP; put it behind a TLS proxy off this machine"
        )
    run_server(config, demo=demo, demo_epochs=demo_epochs)


users_app = typer.Typer(
    help="Platform users and API tokens, managed on the server's own database.",
    no_args_is_help=True,
)


def _auth() -> Auth:
    from lepton.platform._auth import Auth
    from lepton.storage import open_database

    auth = Auth(open_database())
    auth.bootstrap(get_settings().home)
    return auth


@users_app.command("list")
def users_list(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """List users."""
    found, _ = _auth().list_users(0, 10_000)
    if as_json:
        print(json.dumps([u.model_dump() for u in found], indent=2))
        return
    table = Table("id", "name", "role", "active")
    for u in found:
        table.add_row(str(u.id), u.name, u.role, "yes" if u.active else "no")
    console.print(table)


@users_app.command("create")
def users_create(
    name: str = typer.Argument(..., help="Lowercase user name, e.g. alice."),
    role: str = typer.Option("viewer", help="viewer (reads), editor (also changes), admin."),
    token: bool = typer.Option(True, help="Also create an API token and print it once."),
) -> None:
    """Create a user (and a first API token, printed once)."""
    from lepton.platform._auth import ROLES

    if role not in ROLES:
        raise ConfigError(f"--role must be one of {', '.join(ROLES)}, got {role!r}")
    auth = _auth()
    user = auth.create_user(name, role)  # type: ignore[arg-type]
    console.print(f"created user {user.name} ({user.role}), id {user.id}")
    if token:
        _, secret = auth.create_token(user.id, "created by `lepton users create`")
        console.print("API token (shown once; store it now):")
        print(secret)
