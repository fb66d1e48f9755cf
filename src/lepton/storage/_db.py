"""The metadata database: SQLite under ``LEPTON_HOME`` by default, PostgreSQL by URL.

The schema is built and evolved only by the Alembic migrations shipped in
``lepton/storage/migrations``; :meth:`Database.check` refuses a database whose schema
is older than this Lepton (the message says to run ``lepton db upgrade``) or newer.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event, make_url
from sqlalchemy.exc import ArgumentError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from lepton._fs import PRIVATE_FILE
from lepton.config import get_settings
from lepton.errors import DatabaseError, StaleSchemaError

__all__ = ["Database", "default_url", "open_database", "sqlite_pragmas"]

MIGRATIONS = Path(__file__).parent / "migrations"


def default_url() -> str:
    """``LEPTON_DATABASE_URL``, else SQLite at ``$LEPTON_HOME/lepton.db``."""
    settings = get_settings()
    if settings.database_url:
        return settings.database_url.get_secret_value()
    return f"sqlite:///{settings.ensure_home() / 'lepton.db'}"


def _private_sqlite_file(url: str) -> None:
    """Create an SQLite database file as ``0600`` before SQLite does (with the umask's
    ``0644``), or make an existing one ``0600``; SQLite gives its ``-wal`` and ``-shm``
    files the database file's mode."""
    try:
        database = make_url(url).database
    except ArgumentError:
        return  # create_engine reports the bad URL
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    # Never open (and so close) an existing database file here: closing any descriptor of
    # a file drops every POSIX lock this process holds on it, the locks of SQLite's open
    # connections included. Another process may then take the file for its own (a last
    # connection checkpoints and deletes the WAL) and the database is corrupted
    # ("database disk image is malformed"). A path-based chmod takes no descriptor.
    try:
        fd = os.open(
            database, os.O_RDONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0),
            PRIVATE_FILE,
        )  # fmt: skip
    except FileExistsError:
        with contextlib.suppress(OSError):  # someone else's file: leave its mode to them
            if os.stat(database).st_mode & 0o777 != PRIVATE_FILE:
                os.chmod(database, PRIVATE_FILE)
        return
    except OSError:
        return  # a missing folder, say: SQLite's own error says which when it connects
    os.close(fd)  # new and empty: no connection has it open yet


def sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """How Lepton sets up every SQLite connection (WAL, foreign keys, a 30 s busy wait);
    ``event.listen(engine, "connect", sqlite_pragmas)`` gives another engine the same."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")  # readers never block the writer
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")  # wait for a concurrent writer, not fail
    cursor.execute("PRAGMA synchronous=NORMAL")  # durable at every checkpoint under WAL
    cursor.close()


class Database:
    """A connection to the metadata database.

    Args:
        url: An SQLAlchemy URL (``sqlite:///path.db``, ``postgresql+psycopg://...``);
            default: :func:`default_url`.
    """

    def __init__(self, url: str | None = None) -> None:
        self.url = url or default_url()
        try:
            if self.url.startswith("sqlite"):
                _private_sqlite_file(self.url)
                self.engine: Engine = create_engine(self.url, connect_args={"timeout": 30})
                event.listen(self.engine, "connect", sqlite_pragmas)
            else:
                self.engine = create_engine(self.url, pool_pre_ping=True)
        except (SQLAlchemyError, ImportError) as exc:
            raise DatabaseError(
                f"cannot use database URL {self.engine_url_text()} ({exc}); check "
                f"LEPTON_DATABASE_URL (e.g. postgresql+psycopg://user@host/db)"
            ) from None
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    def engine_url_text(self) -> str:
        """The URL with any password hidden, for messages."""
        head, sep, tail = self.url.rpartition("@")
        return (
            f"{head.split(':')[0]}:***@{tail}" if sep and ":" in head.split("//")[-1] else self.url
        )

    def __repr__(self) -> str:
        return f"Database({self.engine_url_text()!r})"

    # -- schema ---------------------------------------------------------------------------
    def _alembic(self) -> Config:
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        return config

    def head_revision(self) -> str:
        """The schema revision this Lepton needs."""
        head = ScriptDirectory.from_config(self._alembic()).get_current_head()
        assert head is not None
        return head

    def current_revision(self) -> str | None:
        """The schema revision the database has (``None``: empty database)."""
        try:
            with self.engine.connect() as conn:
                return MigrationContext.configure(conn).get_current_revision()
        except OperationalError as exc:
            raise DatabaseError(
                f"cannot reach the database {self.engine_url_text()} "
                f"({str(exc.orig).strip()}); check that it runs and LEPTON_DATABASE_URL"
            ) from None

    def upgrade(self, revision: str = "head") -> None:
        """Migrate the schema (``lepton db upgrade``); a no-op when already current."""
        config = self._alembic()
        with self.engine.begin() as conn:
            config.attributes["connection"] = conn
            command.upgrade(config, revision)

    def downgrade(self, revision: str) -> None:
        """Migrate the schema back to ``revision`` (``"base"``: empty)."""
        config = self._alembic()
        with self.engine.begin() as conn:
            config.attributes["connection"] = conn
            command.downgrade(config, revision)

    def check(self) -> None:
        """Raise :class:`StaleSchemaError` unless the schema is exactly current."""
        current, head = self.current_revision(), self.head_revision()
        if current == head:
            return
        if current is None or current in self._older_than(head):
            raise StaleSchemaError(
                f"the database {self.engine_url_text()} has schema {current or 'none'} but this "
                f"Lepton needs {head}; run `lepton db upgrade`"
            )
        raise StaleSchemaError(
            f"the database {self.engine_url_text()} has schema {current}, newer than this "
            f"Lepton knows ({head}); upgrade Lepton"
        )

    def _older_than(self, head: str) -> set[str]:
        script = ScriptDirectory.from_config(self._alembic())
        return {rev.revision for rev in script.walk_revisions(base="base", head=head)} - {head}

    # -- work -----------------------------------------------------------------------------
    @contextlib.contextmanager
    def session(self) -> Iterator[Session]:
        """A transaction: committed when the block ends, rolled back if it raises."""
        with self._sessions() as session, session.begin():
            yield session

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()


_OPEN: dict[str, Database] = {}


def open_database(url: str | None = None) -> Database:
    """The shared :class:`Database` for ``url`` (default: :func:`default_url`), ready to use.

    An empty database gets the current schema; an older one raises
    :class:`StaleSchemaError` (run ``lepton db upgrade``), so nothing is migrated
    behind a team's back.
    """
    key = url or default_url()
    database = _OPEN.get(key)
    if database is None:
        database = Database(key)
        if database.current_revision() is None:
            database.upgrade()
        database.check()
        _OPEN[key] = database
    return database
