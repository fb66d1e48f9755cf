"""Shared fixtures: every test runs with its own LEPTON_HOME."""

from __future__ import annotations

import itertools
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # test helpers (postgres.py)

# The xdist workers share the machine's cores: each worker, and every process it starts,
# gets its share of OpenMP threads. Two workers with two threads each on two cores made
# one MNIST epoch 2.2x slower than one thread each (measured side by side, 2026-12-01).
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    _SHARE = str(max(1, (os.cpu_count() or 1) // _WORKERS))
    os.environ.setdefault("OMP_NUM_THREADS", _SHARE)
    os.environ.setdefault("MKL_NUM_THREADS", _SHARE)
    os.environ.setdefault("LEPTON_NUM_THREADS", _SHARE)  # lp.fit, and `make run`'s demo job


@pytest.fixture(autouse=True)
def _lepton_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path_factory.mktemp("lepton-home")
    monkeypatch.setenv("LEPTON_HOME", str(home))
    monkeypatch.delenv("LEPTON_DATA_DIR", raising=False)
    return home


@pytest.fixture(scope="session")
def postgres_server_url() -> Iterator[str]:
    """A real PostgreSQL server on 127.0.0.1 for the whole test session."""
    from postgres import postgres_server, server_binaries

    if server_binaries() is None and os.geteuid() != 0:
        pytest.skip(
            "PostgreSQL is not installed and we are not root: sudo apt-get install postgresql"
        )
    with postgres_server() as url:
        yield url


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A real S3-compatible server (moto's server mode) on 127.0.0.1 for the session."""
    from s3 import s3_server

    with s3_server() as url:
        yield url


_DB_COUNTER = itertools.count()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database of each backend: one shared suite runs over both."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'lepton.db'}"
    from postgres import create_database

    server = request.getfixturevalue("postgres_server_url")
    return create_database(server, f"lepton_test_{os.getpid()}_{next(_DB_COUNTER)}")


@pytest.fixture
def db(database_url: str) -> Iterator[Any]:
    """A migrated, empty metadata database of each backend."""
    from lepton.storage import Database

    database = Database(database_url)
    database.upgrade()
    yield database
    database.dispose()
