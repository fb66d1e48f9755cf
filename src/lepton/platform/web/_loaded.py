"""Loaded model services kept by the dashboard's pages that run a registered version in
the server process (the Explain panel, the recommender page): a few at a time, least
recently used dropped. Versions are immutable, so a kept service is never stale."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

from lepton.storage import Database

__all__ = ["Loaded"]


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
