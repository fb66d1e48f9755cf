"""Which artifact store Lepton writes to: the one under ``LEPTON_HOME`` unless another
is put in its place.

Tracking (run artifacts) and the registry (model files) both ask :func:`artifact_store`;
a process that keeps its artifacts elsewhere (the platform with its own store, a test
with a temporary folder) puts its store in place with :func:`use_artifact_store`.

Example:
    >>> from lepton.storage import LocalArtifactStore, artifact_store, use_artifact_store
    >>> with use_artifact_store(LocalArtifactStore(tmp_path)) as store:  # doctest: +SKIP
    ...     artifact_store() is store
    True
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path

from lepton.config import get_settings
from lepton.storage._artifacts import ArtifactStore, LocalArtifactStore
from lepton.storage._crypto import Cipher

__all__ = ["artifact_store", "use_artifact_store"]

_LOCK = threading.Lock()
_IN_PLACE: list[ArtifactStore] = []  # innermost last; process-wide, so threads see it too
_BY_ROOT: dict[Path | str, ArtifactStore] = {}


def artifact_store() -> ArtifactStore:
    """The store in place (:func:`use_artifact_store`), else the one ``LEPTON_ARTIFACTS``
    names (an ``s3://bucket/prefix`` or a folder; default ``LEPTON_HOME/artifacts``),
    encrypted when a key is configured."""
    with _LOCK:
        if _IN_PLACE:
            return _IN_PLACE[-1]
        settings = get_settings()
        where: Path | str = settings.artifacts_dir
        if settings.artifacts and settings.artifacts.startswith("s3://"):
            where = settings.artifacts
        store = _BY_ROOT.get(where)
        if store is None:
            if isinstance(where, str):
                from lepton.storage._s3 import S3ArtifactStore

                store = S3ArtifactStore(where, cipher=Cipher.from_settings())
            else:
                store = LocalArtifactStore(where, cipher=Cipher.from_settings())
            _BY_ROOT[where] = store
        return store


@contextlib.contextmanager
def use_artifact_store(store: ArtifactStore) -> Iterator[ArtifactStore]:
    """Make ``store`` the one :func:`artifact_store` returns, in every thread, until the
    block ends (blocks nest; the previous store comes back).

    Args:
        store: Any :class:`ArtifactStore`, e.g. a ``LocalArtifactStore`` on a temporary
            folder in a test.
    """
    with _LOCK:
        _IN_PLACE.append(store)
    try:
        yield store
    finally:
        with _LOCK:
            _IN_PLACE.remove(store)
