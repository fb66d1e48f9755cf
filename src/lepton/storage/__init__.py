"""Storage: the metadata database and the artifact store (content-addressed, crash-safe,
optionally encrypted).

Example:
    >>> store = LocalArtifactStore("/tmp/lepton-artifacts")  # doctest: +SKIP
    >>> store.put("runs/1/model.safetensors", weights)  # doctest: +SKIP
"""

from lepton.storage._artifacts import ArtifactInfo, ArtifactStore, LocalArtifactStore
from lepton.storage._crypto import Cipher, generate_key
from lepton.storage._current import artifact_store, use_artifact_store
from lepton.storage._datasets import DatasetVersionStore, record_dataset_use
from lepton.storage._db import Database, default_url, open_database, sqlite_pragmas
from lepton.storage._keys import validate_key
from lepton.storage._s3 import S3ArtifactStore

__all__ = [
    "ArtifactInfo",
    "ArtifactStore",
    "Cipher",
    "Database",
    "DatasetVersionStore",
    "LocalArtifactStore",
    "S3ArtifactStore",
    "artifact_store",
    "default_url",
    "generate_key",
    "open_database",
    "record_dataset_use",
    "sqlite_pragmas",
    "use_artifact_store",
    "validate_key",
]
