"""Crash-safe, private file writes shared by every part of Lepton that persists something.

A reader never sees a half-written file: content goes to a temporary file in the same
folder, is flushed and fsync'ed, then renamed over the target (atomic on POSIX).

Everything Lepton keeps is private to its user, whatever the umask: folders it creates
are ``0700`` (:func:`private_dir`), files ``0600`` (:func:`atomic_write`,
:func:`open_private`). The home holds the database, model weights, job logs and tokens.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

__all__ = [
    "PRIVATE_DIR",
    "PRIVATE_FILE",
    "atomic_dir",
    "atomic_write",
    "atomic_write_bytes",
    "fsync_dir",
    "make_dirs",
    "open_private",
    "private_dir",
    "remove_tree",
]

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600


def make_dirs(path: str | os.PathLike[str]) -> Path:
    """Create ``path`` and its missing parents as ``0700``; existing folders are left as
    they are (they may be the user's own, like the folder an export goes to).

    ``mkdir``'s mode passes through the umask, so each new folder is ``chmod``-ed too.
    """
    target = Path(path)
    missing: list[Path] = []
    folder = target
    while not folder.is_dir():
        missing.append(folder)
        if folder.parent == folder:
            break
        folder = folder.parent
    for new in reversed(missing):
        try:
            new.mkdir(mode=PRIVATE_DIR)
        except FileExistsError:
            if not new.is_dir():
                raise
            continue  # a concurrent writer made it, with these same rules
        os.chmod(new, PRIVATE_DIR)
    return target


def private_dir(path: str | os.PathLike[str]) -> Path:
    """Make ``path`` a folder only its owner can enter (``0700``), creating it and its
    missing parents (also ``0700``). For Lepton's own folders: the home, a store's root.

    Example:
        >>> home = private_dir(get_settings().home)  # doctest: +SKIP
    """
    target = make_dirs(path)
    if target.stat().st_mode & 0o777 != PRIVATE_DIR:
        os.chmod(target, PRIVATE_DIR)  # a home made by an older Lepton was 0755
    return target


def open_private(path: str | os.PathLike[str], mode: str = "ab", **kwargs: Any) -> IO[Any]:
    """``open(path, mode)`` for appending or writing, creating the file as ``0600``.

    An existing file (a log from an older Lepton) is made ``0600`` too. Missing folders
    are created by :func:`make_dirs`.

    Args:
        mode: ``"a"``, ``"ab"``, ``"w"`` or ``"wb"``.
        kwargs: Passed to :func:`open` (``encoding``, ``buffering``).
    """
    assert mode in ("a", "ab", "w", "wb"), f"open_private cannot open for {mode!r}"
    target = Path(path)
    make_dirs(target.parent)
    flags = os.O_WRONLY | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
    flags |= os.O_APPEND if mode.startswith("a") else os.O_TRUNC
    fd = os.open(target, flags, PRIVATE_FILE)
    try:
        if os.fstat(fd).st_mode & 0o777 != PRIVATE_FILE:
            os.fchmod(fd, PRIVATE_FILE)
        return open(fd, mode, **kwargs)  # the caller closes it
    except BaseException:
        os.close(fd)
        raise


def fsync_dir(path: Path) -> None:
    """Flush a folder's entries (renames, new files) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike[str], write: Callable[[Path], None]) -> Path:
    """Write ``path`` atomically: ``write(tmp)`` fills a temp file that replaces ``path``.

    Args:
        path: The final file.
        write: Called with a temporary path in the same folder; must create that file.

    Returns:
        The final path.
    """
    target = Path(path)
    make_dirs(target.parent)
    # mkstemp creates the file 0600; whatever ``write`` does, it stays 0600 below
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        with open(tmp, "rb+") as handle:
            os.fchmod(handle.fileno(), PRIVATE_FILE)
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(target.parent)
    return target


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""

    def write(tmp: Path) -> None:
        tmp.write_bytes(data)

    return atomic_write(path, write)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Build a folder in a temporary sibling and rename it into place when the block ends.

    The target must not exist yet. If the block raises, the temporary folder is removed
    and nothing appears at ``path``. The folder ends ``0700`` and every file in it
    ``0600``, however the block wrote them.
    """
    target = Path(path)
    make_dirs(target.parent)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield tmp
        for folder, subdirs, files in os.walk(tmp):
            for name in subdirs:
                os.chmod(os.path.join(folder, name), PRIVATE_DIR)
            for name in files:
                with open(os.path.join(folder, name), "rb+") as handle:
                    os.fchmod(handle.fileno(), PRIVATE_FILE)
                    os.fsync(handle.fileno())
        os.chmod(tmp, PRIVATE_DIR)
        fsync_dir(tmp)
        os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync_dir(target.parent)


def remove_tree(path: str | os.PathLike[str], *, attempts: int = 5) -> None:
    """Delete a folder at once and for good, even while something still writes into it.

    The folder is first renamed to a hidden sibling (atomic: from then on nothing sees it
    at ``path``, and the name can be used again), then removed. A file that vanishes
    while the tree is walked (a database's background compaction deleting its own files,
    say) is not an error; a walk that finds new files is repeated. Other errors raise.
    """
    target = Path(path)
    doomed = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.deleted")
    os.rename(target, doomed)
    fsync_dir(target.parent)

    def vanished_is_fine(func: Callable[..., Any], name: str, exc_info: Any) -> None:
        if not isinstance(exc_info[1], FileNotFoundError):
            raise exc_info[1]

    for attempt in range(attempts):
        shutil.rmtree(doomed, onerror=vanished_is_fine)
        if not doomed.exists():
            return
        time.sleep(0.05 * (attempt + 1))
    raise OSError(f"could not remove {doomed}: files keep appearing in it")
