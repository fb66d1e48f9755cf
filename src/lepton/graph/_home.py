"""Where graphs live: ``LEPTON_HOME/graphs/<name>/``, their names, and the one open
pyoxigraph store per folder that every :class:`~lepton.graph.Graph` of it shares."""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path
from typing import Any

import pyoxigraph as ox

from lepton.config import get_settings
from lepton.errors import GraphError

__all__ = ["NAME", "check_name", "forget", "graphs_dir", "list_graphs", "store_at", "store_dir"]

NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
# One pyoxigraph Store per folder and process: RocksDB locks its folder, so a second
# open of the same graph (read-only or not) shares the first one's store.
_OPEN: dict[Path, ox.Store] = {}
_OPEN_LOCK = threading.Lock()


def graphs_dir() -> Path:
    """``LEPTON_HOME/graphs``: where every graph's folder is."""
    return get_settings().home / "graphs"


def check_name(name: str) -> str:
    """``name`` if it is a valid graph name, else a :class:`GraphError` saying why."""
    if not isinstance(name, str) or not NAME.match(name):
        raise GraphError(
            f"graph name {name!r} is not valid: use 1-64 lowercase letters, digits, '_', '.' "
            f"or '-', starting with a letter or digit (e.g. 'wordnet')"
        )
    return name


def store_at(folder: Path) -> ox.Store:
    """The pyoxigraph store in ``folder``, opened once per process."""
    with _OPEN_LOCK:
        store = _OPEN.get(folder)
        if store is None:
            try:
                store = ox.Store(str(folder))
            except OSError as exc:
                raise GraphError(f"cannot open the graph store at {folder}: {exc}") from None
            _OPEN[folder] = store
        return store


def store_dir(folder: Path, meta: dict[str, Any] | None = None) -> Path:
    """The RocksDB folder of the graph in ``folder``, as its manifest ``meta`` (read from
    ``graph.json`` when not given) names it; ``store`` for graphs made before each store
    had its own id."""
    if meta is None:
        meta = json.loads((folder / "graph.json").read_text(encoding="utf-8"))
    return folder / str(meta.get("store", "store"))


def forget(folder: Path) -> None:
    """Drop the open store of ``folder`` (before its files are deleted)."""
    with _OPEN_LOCK:
        _OPEN.pop(folder, None)


def list_graphs() -> list[str]:
    """Names of the graphs under ``LEPTON_HOME/graphs``."""
    root = graphs_dir()
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / "graph.json").exists())
