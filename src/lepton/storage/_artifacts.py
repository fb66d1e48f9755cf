"""The artifact store: named, content-addressed, crash-safe blobs.

The contract every backend (local folder now, S3-compatible later) keeps, and that one
shared test suite checks:

1. ``put(key, data)`` stores bytes under a key and returns their :class:`ArtifactInfo`;
   a key is replaced whole or not at all, and a reader never sees partial content, even
   if the writing process is killed at any instant.
2. Keys are validated by :func:`validate_key` before anything is touched, so no key can
   reach outside the store.
3. ``get`` returns exactly the bytes that were put, or raises: ``ArtifactNotFoundError``
   for an unknown key, ``IntegrityError`` when stored bytes no longer match their
   SHA-256, ``EncryptionError`` when encrypted content cannot be decrypted.
4. Identical content is stored once (content addressing); ``delete`` removes a key, and
   ``gc`` removes content no key refers to and leftovers of interrupted writes.
5. ``verify`` re-hashes everything and lists every problem; an empty list means healthy.
"""

from __future__ import annotations

import abc
import builtins
import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from lepton._fs import atomic_write_bytes, private_dir
from lepton.errors import ArtifactNotFoundError, EncryptionError, IntegrityError, LeptonError
from lepton.storage._crypto import Cipher
from lepton.storage._keys import resolve_inside, validate_key

__all__ = ["ArtifactInfo", "ArtifactStore", "LocalArtifactStore"]


@dataclass(frozen=True)
class ArtifactInfo:
    """What the store knows about one artifact."""

    key: str
    sha256: str
    size: int
    encrypted: bool
    created_at: float


class ArtifactStore(abc.ABC):
    """Base class of artifact stores; see the module docstring for the contract."""

    @abc.abstractmethod
    def put(self, key: str, data: bytes) -> ArtifactInfo:
        """Store ``data`` under ``key`` (replacing what was there), atomically."""

    @abc.abstractmethod
    def get(self, key: str) -> bytes:
        """The bytes stored under ``key``, checked against their hash."""

    @abc.abstractmethod
    def info(self, key: str) -> ArtifactInfo:
        """Metadata of ``key`` without reading its content."""

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Remove ``key`` (its content goes at the next :meth:`gc` if unreferenced)."""

    @abc.abstractmethod
    def list(self, prefix: str = "") -> builtins.list[ArtifactInfo]:
        """Artifacts whose key starts with ``prefix``, sorted by key."""

    @abc.abstractmethod
    def verify(self) -> builtins.list[str]:
        """Every problem found by re-reading all artifacts; empty when healthy."""

    @abc.abstractmethod
    def gc(self, *, min_age: float = 3600.0) -> int:
        """Remove unreferenced content and interrupted writes; returns files removed."""

    cipher: Cipher | None = None

    def _opened(self, info: ArtifactInfo, stored: bytes) -> bytes:
        """The stored bytes of ``info``, decrypted if need be and checked against its
        SHA-256 (every backend reads through here)."""
        if info.encrypted:
            if self.cipher is None:
                raise EncryptionError(
                    f"{info.key!r} is encrypted; set LEPTON_ENCRYPTION_KEY (or "
                    f"LEPTON_ENCRYPTION_KEY_FILE) to the key it was written with"
                )
            stored = self.cipher.decrypt(stored, info.sha256.encode())
        if hashlib.sha256(stored).hexdigest() != info.sha256:
            raise IntegrityError(
                f"the content of {info.key!r} no longer matches its SHA-256 (corruption or "
                f"tampering); restore it from a backup or put the artifact again"
            )
        return stored

    def exists(self, key: str) -> bool:
        """Whether ``key`` holds an artifact."""
        try:
            self.info(key)
        except ArtifactNotFoundError:
            return False
        return True

    def put_file(self, key: str, path: str | os.PathLike[str]) -> ArtifactInfo:
        """Store a file's content under ``key``."""
        return self.put(key, Path(path).read_bytes())


class LocalArtifactStore(ArtifactStore):
    """Artifacts in a local folder.

    Layout: ``blobs/<2 hex>/<sha256>[.enc]`` holds content, ``refs/<2 hex>/<sha256 of
    key>.json`` maps a key to its content. Refs are named by a hash of the key, so key
    text never becomes a path; every write is temp file + fsync + rename.

    Args:
        root: The store's folder (created if missing).
        cipher: Encrypt new content with this (see :meth:`Cipher.from_settings`); also
            needed to read encrypted content.
    """

    def __init__(self, root: str | os.PathLike[str], *, cipher: Cipher | None = None) -> None:
        self.root = Path(root).expanduser()
        self.cipher = cipher
        private_dir(self.root)  # model weights and run artifacts: for the user alone
        for sub in ("blobs", "refs"):
            private_dir(self.root / sub)

    def __repr__(self) -> str:
        return f"LocalArtifactStore({str(self.root)!r}, encrypted={self.cipher is not None})"

    # -- paths ---------------------------------------------------------------------------
    def _ref_path(self, key: str) -> Path:
        digest = hashlib.sha256(validate_key(key).encode()).hexdigest()
        return resolve_inside(self.root, f"refs/{digest[:2]}/{digest}.json")

    def _blob_path(self, sha256: str, encrypted: bool) -> Path:
        suffix = ".enc" if encrypted else ""
        return resolve_inside(self.root, f"blobs/{sha256[:2]}/{sha256}{suffix}")

    # -- contract ------------------------------------------------------------------------
    def put(self, key: str, data: bytes) -> ArtifactInfo:
        ref = self._ref_path(key)  # validates the key first
        sha = hashlib.sha256(data).hexdigest()
        encrypted = self.cipher is not None
        blob = self._blob_path(sha, encrypted)
        if not blob.exists():
            stored = self.cipher.encrypt(data, sha.encode()) if self.cipher else data
            atomic_write_bytes(blob, stored)
        info = ArtifactInfo(key, sha, len(data), encrypted, time.time())
        atomic_write_bytes(ref, json.dumps(asdict(info)).encode())
        return info

    def info(self, key: str) -> ArtifactInfo:
        ref = self._ref_path(key)
        try:
            raw = json.loads(ref.read_bytes())
        except FileNotFoundError:
            raise ArtifactNotFoundError(
                f"no artifact under key {key!r}; list what exists with store.list()"
            ) from None
        except ValueError:
            raise IntegrityError(
                f"the record of {key!r} is corrupt ({ref}); run verify()"
            ) from None
        return ArtifactInfo(**raw)

    def get(self, key: str) -> bytes:
        info = self.info(key)
        return self._read(info)

    def _read(self, info: ArtifactInfo) -> bytes:
        blob = self._blob_path(info.sha256, info.encrypted)
        try:
            stored = blob.read_bytes()
        except FileNotFoundError:
            raise IntegrityError(
                f"the content of {info.key!r} is missing from the store ({blob}); restore it "
                f"from a backup or put the artifact again"
            ) from None
        return self._opened(info, stored)

    def delete(self, key: str) -> None:
        ref = self._ref_path(key)
        try:
            ref.unlink()
        except FileNotFoundError:
            raise ArtifactNotFoundError(f"no artifact under key {key!r} to delete") from None

    def _refs(self) -> builtins.list[Path]:
        return sorted(p for p in (self.root / "refs").glob("*/*.json"))

    def list(self, prefix: str = "") -> builtins.list[ArtifactInfo]:
        infos = []
        for ref in self._refs():
            info = ArtifactInfo(**json.loads(ref.read_bytes()))
            if info.key.startswith(prefix):
                infos.append(info)
        return sorted(infos, key=lambda i: i.key)

    def verify(self) -> builtins.list[str]:
        problems = []
        for ref in self._refs():
            try:
                info = ArtifactInfo(**json.loads(ref.read_bytes()))
                self._read(info)
            except (ValueError, TypeError):
                problems.append(f"{ref}: unreadable record")
            except LeptonError as exc:
                problems.append(exc.message)
        return problems

    def gc(self, *, min_age: float = 3600.0) -> int:
        """Remove unreferenced content and interrupted writes older than ``min_age`` s.

        The age guard keeps a blob that a concurrent ``put`` wrote a moment ago, before
        its record landed.
        """
        referenced = set()
        for ref in self._refs():
            try:
                info = ArtifactInfo(**json.loads(ref.read_bytes()))
            except (ValueError, TypeError):
                continue
            referenced.add(self._blob_path(info.sha256, info.encrypted))
        candidates = set((self.root / "blobs").glob("*/*")) | set(self.root.glob("refs/*/.*.tmp"))
        cutoff = time.time() - min_age
        removed = 0
        for path in sorted(candidates):
            stale = path.name.startswith(".") or path.resolve() not in referenced
            if stale and path.stat().st_mtime <= cutoff:
                path.unlink(missing_ok=True)
                removed += 1
        return removed
