"""``remove_tree``: a folder goes at once and for good, even while something deletes or
writes files in it (RocksDB compacting the store of a graph being deleted)."""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path

import pytest

from lepton._fs import remove_tree


def _fill(folder: Path, n: int) -> None:
    for sub in ("a", "b"):
        (folder / sub).mkdir(parents=True)
        for i in range(n):
            (folder / sub / f"{i:06d}.sst").write_bytes(b"x")


def test_a_tree_whose_files_vanish_while_it_is_removed_is_removed(tmp_path: Path) -> None:
    folder = tmp_path / "store"
    _fill(folder, 2000)
    # A second deleter works through the same folders by descriptor, as a database that
    # holds them open does; it keeps working after the rename.
    fds = [os.open(folder / sub, os.O_RDONLY) for sub in ("b", "a")]
    go = threading.Event()

    def compactor() -> None:
        go.wait()
        for fd in fds:
            for name in sorted(os.listdir(fd)):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(name, dir_fd=fd)

    thread = threading.Thread(target=compactor)
    thread.start()
    go.set()
    try:
        remove_tree(folder)
    finally:
        thread.join()
        for fd in fds:
            os.close(fd)
    assert not folder.exists()
    assert list(tmp_path.iterdir()) == []  # no hidden leftover either


def test_the_name_is_free_at_once_and_other_errors_still_raise(tmp_path: Path) -> None:
    folder = tmp_path / "g"
    _fill(folder, 3)
    remove_tree(folder)
    folder.mkdir()  # the name can be used again straight away
    assert list(tmp_path.iterdir()) == [folder]
    with pytest.raises(FileNotFoundError):
        remove_tree(tmp_path / "never-was")
