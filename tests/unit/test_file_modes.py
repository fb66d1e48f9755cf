"""Everything Lepton keeps under its home is private to the user, whatever the umask.

The home holds the metadata database, model weights, run artifacts and checkpoints:
every folder must be ``0700`` and every file ``0600``.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

import lepton as lp
from lepton._fs import atomic_dir, atomic_write_bytes, open_private, private_dir
from lepton.config import get_settings
from lepton.storage import Database, open_database


@pytest.fixture(params=[0o022, 0o000], ids=["umask-022", "umask-000"])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def modes(root: Path) -> dict[str, str]:
    """``{relative path: octal mode}`` of ``root`` and everything under it."""
    found = {".": oct(stat.S_IMODE(root.stat().st_mode))}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder, name)
            found[str(path.relative_to(root))] = oct(stat.S_IMODE(path.lstat().st_mode))
    return found


def assert_private(root: Path) -> None:
    wrong = {
        path: mode
        for path, mode in modes(root).items()
        if mode != (oct(0o700) if (root / path).is_dir() else oct(0o600))
    }
    assert wrong == {}, "expected folders 0700 and files 0600"


def test_a_fresh_home_is_private(
    umask: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "fresh" / "lepton-home"  # not there yet: Lepton creates it
    monkeypatch.setenv("LEPTON_HOME", str(home))
    db = open_database()
    try:
        torch.manual_seed(0)
        train = lp.data.load("iris", split="train")
        model = lp.models.MLP(in_features=4, num_classes=3, hidden=[8])
        with lp.start_run("modes") as run:
            lp.fit(model, train, epochs=1, quiet=True, checkpoint_dir=home / "checkpoints" / "a")
            run.log_artifact(b'{"ok": true}', name="report.json")
            lp.register(model, "modes-mlp", dataset=train)
        assert lp.load_model("modes-mlp:1") is not None
        # the database is still open, so SQLite's -wal and -shm files are there too
        assert {"lepton.db", "lepton.db-wal", "lepton.db-shm"} <= {p.name for p in home.iterdir()}
        assert (home / "artifacts" / "blobs").is_dir()
        assert any((home / "checkpoints" / "a").iterdir())
        assert_private(home)
    finally:
        db.dispose()
    assert oct(stat.S_IMODE((tmp_path / "fresh").stat().st_mode)) == oct(0o700)


def test_an_older_homes_modes_are_repaired(umask: int, tmp_path: Path) -> None:
    home = tmp_path / "old-home"
    home.mkdir(mode=0o755)
    home.chmod(0o755)
    (home / "lepton.db").touch(mode=0o644)
    (home / "lepton.db").chmod(0o644)
    (home / "log.txt").write_text("an old log\n")
    (home / "log.txt").chmod(0o644)
    assert private_dir(home) == home
    Database(f"sqlite:///{home / 'lepton.db'}").dispose()
    with open_private(home / "log.txt", "a", encoding="utf-8") as log:
        log.write("a new line\n")
    assert (home / "log.txt").read_text() == "an old log\na new line\n"
    assert_private(home)


def test_writes_are_private_wherever_they_go(umask: int, tmp_path: Path) -> None:
    outside = tmp_path / "users-own-folder"
    outside.mkdir()
    outside.chmod(0o755)
    atomic_write_bytes(outside / "new" / "deeper" / "export.onnx", b"bytes")
    with atomic_dir(outside / "ckpt") as tmp:
        (tmp / "state.json").write_text("{}")
        (tmp / "nested").mkdir()
        (tmp / "nested" / "more.txt").write_bytes(b"x")
    with open_private(outside / "logs" / "job.log", "wb") as log:
        log.write(b"line\n")
    # the user's own folder keeps its mode; what Lepton made in it is private
    assert oct(stat.S_IMODE(outside.stat().st_mode)) == oct(0o755)
    for made in ("new", "ckpt", "logs"):
        assert_private(outside / made)


def test_the_settings_create_the_home_privately(
    umask: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LEPTON_HOME", str(tmp_path / "h"))
    home = get_settings().ensure_home()
    assert home == tmp_path / "h"
    assert_private(home)


_PROBE = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
try:  # SQLite's SHARED lock bytes: every open WAL connection holds one
    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 510, 0x40000002)
except OSError:
    print("held")
else:
    print("free")
"""


def test_opening_a_database_again_keeps_the_locks_of_its_open_connections(tmp_path: Path) -> None:
    """Closing any descriptor of a file drops all of this process's POSIX locks on it, so
    a second ``Database`` on the same file (``lp.register`` beside a running server, say)
    must not open it: another process would then see no reader, checkpoint, delete the WAL
    under the first connection, and the database would be corrupted."""
    path = tmp_path / "locks.db"
    first = Database(f"sqlite:///{path}")

    def probe() -> str:
        out = subprocess.run(
            [sys.executable, "-c", _PROBE, str(path)], capture_output=True, text=True, check=True
        )
        return out.stdout.strip()

    try:
        with first.engine.connect() as conn:
            conn.exec_driver_sql("CREATE TABLE t (x INTEGER)")
            conn.exec_driver_sql("SELECT * FROM t").all()
            assert probe() == "held"
            os.chmod(path, 0o644)  # an older file: the second handle makes it private
            Database(f"sqlite:///{path}").dispose()
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
            assert probe() == "held", "the first connection's lock was dropped"
    finally:
        first.dispose()
