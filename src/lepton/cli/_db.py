"""``lepton db``: the metadata database's schema."""

from __future__ import annotations

import json

import typer
from rich.console import Console

from lepton.storage import Database

__all__ = ["db_app"]

db_app = typer.Typer(
    help="The metadata database: check and migrate its schema.", no_args_is_help=True
)


@db_app.command()
def upgrade(
    url: str | None = typer.Option(
        None, help="Database URL (default: LEPTON_DATABASE_URL or SQLite)."
    ),
) -> None:
    """Migrate the schema to what this Lepton needs (safe to run again)."""
    database = Database(url)
    before = database.current_revision()
    database.upgrade()
    after = database.current_revision()
    Console().print(f"{database.engine_url_text()}: schema {before or 'none'} -> {after}")


@db_app.command()
def status(
    url: str | None = typer.Option(
        None, help="Database URL (default: LEPTON_DATABASE_URL or SQLite)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON."),
) -> None:
    """Show the database, its schema revision and the one this Lepton needs."""
    database = Database(url)
    current, required = database.current_revision(), database.head_revision()
    info = {
        "url": database.engine_url_text(),
        "current": current,
        "required": required,
        "up_to_date": current == required,
    }
    if as_json:
        print(json.dumps(info, indent=2))
        return
    state = "[green]up to date[/]" if info["up_to_date"] else "[yellow]run `lepton db upgrade`[/]"
    Console().print(
        f"{info['url']}: schema {info['current'] or 'none'} (needs {info['required']}) {state}"
    )
