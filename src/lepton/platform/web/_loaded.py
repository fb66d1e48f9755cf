"""What the dashboard's pages that run a registered version in the server process share
(the Explain panel and the solution pages: recommender, graph, text, vision, gallery):
:class:`Loaded`, their set-up services, a few at a time, least recently used dropped
(versions are immutable, so a kept service is never stale); and :func:`versions_of`,
the registered versions of the architectures a page serves."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Collection
from typing import Generic, Protocol, TypeVar

from lepton import registry
from lepton.serve._by_model import architecture_name
from lepton.storage import Database

__all__ = ["SCAN", "Loaded", "versions_of"]

SCAN = 500  # newest versions per model looked at for a page's list


class _Service(Protocol):
    def setup(self) -> None: ...


S = TypeVar("S", bound=_Service)


class Loaded(Generic[S]):
    """``loaded(ref, database)``: the set-up service of ``ref``, made by ``make`` once.

    Args:
        make: Builds a service from a version reference and the database.
        size: Services kept at most.
    """

    def __init__(self, make: Callable[[str, Database], S], size: int = 4) -> None:
        self._make = make
        self._size = size
        self._kept: OrderedDict[tuple[int, str], S] = OrderedDict()
        self._lock = threading.Lock()

    def __call__(self, ref: str, database: Database) -> S:
        key = (id(database), ref)
        with self._lock:
            found = self._kept.get(key)
            if found is not None:
                self._kept.move_to_end(key)
                return found
        service = self._make(ref, database)  # loading is slow: not under the lock
        service.setup()
        with self._lock:
            self._kept[key] = service
            while len(self._kept) > self._size:
                self._kept.popitem(last=False)
        return service


def versions_of(database: Database, architectures: Collection[str]) -> list[registry.ModelVersion]:
    """Every ready version whose architecture is one of ``architectures``, newest model
    first, then newest version (the :data:`SCAN` newest of each model are looked at)."""
    found: list[registry.ModelVersion] = []
    for model in registry.list_models(database=database):
        versions = registry.list_versions(str(model["name"]), database=database)[:SCAN]
        found.extend(v for v in versions if architecture_name(v.manifest) in architectures)
    return sorted(found, key=lambda v: (-v.created_at, v.name, -v.version))
