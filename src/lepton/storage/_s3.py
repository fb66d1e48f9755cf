"""The artifact store on S3-compatible object storage (AWS S3, MinIO, Ceph, R2, ...).

``LEPTON_ARTIFACTS=s3://bucket/prefix`` puts it in place of the local folder. The
endpoint, region and credentials come from where every AWS tool reads them
(``AWS_ENDPOINT_URL``, ``AWS_REGION``, ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``,
``AWS_PROFILE``, an instance role, ...), through boto3.

It keeps the contract of :mod:`lepton.storage._artifacts` with the local store's layout
(``blobs/<2 hex>/<sha256>[.enc]`` for content, ``refs/<2 hex>/<sha256 of key>.json`` for
the key -> content record) as object names under the prefix:

* atomic: an S3 object appears whole when its upload completes, or not at all; a write
  killed mid-way leaves at most an incomplete multipart upload, which no reader sees and
  :meth:`S3ArtifactStore.gc` aborts;
* content is written before the record that points to it, so a record never names
  missing content (unless it was deleted behind Lepton's back, which ``get`` reports);
* every upload carries its SHA-256 for the server to check (``ChecksumAlgorithm``), and
  every read is re-hashed here too (the server's check covers the wire, ours the whole
  path, encryption included); files over 8 MiB go up in parts.
"""

from __future__ import annotations

import base64
import builtins
import hashlib
import io
import json
import time
from dataclasses import asdict
from typing import Any
from urllib.parse import urlparse

from lepton.errors import (
    ArtifactNotFoundError,
    ConfigError,
    IntegrityError,
    LeptonError,
    MissingExtraError,
    StorageError,
)
from lepton.storage._artifacts import ArtifactInfo, ArtifactStore
from lepton.storage._crypto import Cipher
from lepton.storage._keys import validate_key

__all__ = ["S3ArtifactStore"]

MULTIPART_THRESHOLD = 8 * 1024 * 1024  # bytes; larger uploads go in parts of this size


def _client(endpoint_url: str | None) -> Any:
    try:
        import boto3
        from botocore.config import Config
    except ImportError:
        raise MissingExtraError(
            "an s3:// artifact store needs boto3: pip install 'lepton[s3]' (or pip install boto3)"
        ) from None
    config = Config(retries={"max_attempts": 5, "mode": "standard"})
    return boto3.client("s3", endpoint_url=endpoint_url, config=config)


class S3ArtifactStore(ArtifactStore):
    """Artifacts in an S3 bucket, under a prefix.

    Args:
        url: ``s3://bucket`` or ``s3://bucket/prefix``.
        endpoint_url: The S3 endpoint (default: ``AWS_ENDPOINT_URL``, else AWS's).
        cipher: Encrypt new content with this before it leaves the machine; also needed
            to read encrypted content.
        client: A boto3 S3 client to use instead of a new one.

    Raises:
        ConfigError: ``url`` is not an ``s3://bucket[/prefix]`` URL.
        StorageError: The bucket does not exist or cannot be reached (checked here).
    """

    def __init__(
        self,
        url: str,
        *,
        endpoint_url: str | None = None,
        cipher: Cipher | None = None,
        client: Any | None = None,
    ) -> None:
        parsed = urlparse(url)
        if parsed.scheme != "s3" or not parsed.netloc or parsed.query or parsed.fragment:
            raise ConfigError(
                f"an S3 artifact store URL is s3://bucket or s3://bucket/prefix, got {url!r}"
            )
        self.url = url.rstrip("/")
        self.bucket = parsed.netloc
        prefix = parsed.path.strip("/")
        if prefix:
            validate_key(prefix)  # the same rules as a key: no '..', no odd characters
        self.prefix = f"{prefix}/" if prefix else ""
        self.cipher = cipher
        self.client = client if client is not None else _client(endpoint_url)
        self._errors = self.client.exceptions
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except Exception as exc:
            raise StorageError(
                f"cannot use the bucket {self.bucket!r} ({_reason(exc)}); create it, or check "
                "AWS_ENDPOINT_URL, the credentials and LEPTON_ARTIFACTS"
            ) from None

    def __repr__(self) -> str:
        return f"S3ArtifactStore({self.url!r}, encrypted={self.cipher is not None})"

    # -- names ---------------------------------------------------------------------------
    def _ref_name(self, key: str) -> str:
        digest = hashlib.sha256(validate_key(key).encode()).hexdigest()
        return f"{self.prefix}refs/{digest[:2]}/{digest}.json"

    def _blob_name(self, sha256: str, encrypted: bool) -> str:
        return f"{self.prefix}blobs/{sha256[:2]}/{sha256}{'.enc' if encrypted else ''}"

    # -- object I/O ----------------------------------------------------------------------
    def _upload(self, name: str, data: bytes) -> None:
        """One object, whole or not at all, with its SHA-256 checked by the server."""
        try:
            if len(data) <= MULTIPART_THRESHOLD:
                digest = base64.b64encode(hashlib.sha256(data).digest()).decode()
                self.client.put_object(
                    Bucket=self.bucket, Key=name, Body=data, ChecksumSHA256=digest
                )
            else:
                from boto3.s3.transfer import TransferConfig

                self.client.upload_fileobj(
                    io.BytesIO(data), self.bucket, name,
                    ExtraArgs={"ChecksumAlgorithm": "SHA256"},
                    Config=TransferConfig(
                        multipart_threshold=MULTIPART_THRESHOLD,
                        multipart_chunksize=MULTIPART_THRESHOLD, use_threads=False,
                    ),
                )  # fmt: skip
        except LeptonError:
            raise
        except Exception as exc:
            raise StorageError(
                f"could not upload s3://{self.bucket}/{name} ({_reason(exc)}); nothing was "
                "replaced: try again"
            ) from None

    def _download(self, name: str) -> bytes | None:
        """The object's bytes, or None when there is no such object."""
        try:
            answer = self.client.get_object(Bucket=self.bucket, Key=name)
            return bytes(answer["Body"].read())
        except self._errors.NoSuchKey:
            return None
        except Exception as exc:
            raise StorageError(
                f"could not read s3://{self.bucket}/{name} ({_reason(exc)}); try again"
            ) from None

    def _names(self, under: str) -> builtins.list[tuple[str, float]]:
        """``(object name, last modified)`` of every object under ``prefix + under``."""
        out = []
        pages = self.client.get_paginator("list_objects_v2")
        for page in pages.paginate(Bucket=self.bucket, Prefix=self.prefix + under):
            out += [(o["Key"], o["LastModified"].timestamp()) for o in page.get("Contents", [])]
        return out

    # -- contract ------------------------------------------------------------------------
    def put(self, key: str, data: bytes) -> ArtifactInfo:
        ref = self._ref_name(key)  # validates the key first
        sha = hashlib.sha256(data).hexdigest()
        encrypted = self.cipher is not None
        blob = self._blob_name(sha, encrypted)
        if not self._exists(blob):
            stored = self.cipher.encrypt(data, sha.encode()) if self.cipher else data
            self._upload(blob, stored)
        info = ArtifactInfo(key, sha, len(data), encrypted, time.time())
        self._upload(ref, json.dumps(asdict(info)).encode())
        return info

    def _exists(self, name: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=name)
        except Exception as exc:
            if _status(exc) == 404:
                return False
            raise StorageError(
                f"could not reach s3://{self.bucket}/{name} ({_reason(exc)}); try again"
            ) from None
        return True

    def info(self, key: str) -> ArtifactInfo:
        raw = self._download(self._ref_name(key))
        if raw is None:
            raise ArtifactNotFoundError(
                f"no artifact under key {key!r}; list what exists with store.list()"
            )
        return _record(raw, key)

    def get(self, key: str) -> bytes:
        return self._read(self.info(key))

    def _read(self, info: ArtifactInfo) -> bytes:
        name = self._blob_name(info.sha256, info.encrypted)
        stored = self._download(name)
        if stored is None:
            raise IntegrityError(
                f"the content of {info.key!r} is missing from the store (s3://{self.bucket}/"
                f"{name}); restore it from a backup or put the artifact again"
            )
        return self._opened(info, stored)

    def delete(self, key: str) -> None:
        ref = self._ref_name(key)
        if not self._exists(ref):
            raise ArtifactNotFoundError(f"no artifact under key {key!r} to delete")
        self.client.delete_object(Bucket=self.bucket, Key=ref)

    def _records(self) -> builtins.list[tuple[str, bytes | None]]:
        return [(name, self._download(name)) for name, _ in self._names("refs/")]

    def list(self, prefix: str = "") -> builtins.list[ArtifactInfo]:
        infos = []
        for name, raw in self._records():
            if raw is None:  # deleted while listing
                continue
            info = _record(raw, name)
            if info.key.startswith(prefix):
                infos.append(info)
        return sorted(infos, key=lambda i: i.key)

    def verify(self) -> builtins.list[str]:
        problems = []
        for name, raw in self._records():
            if raw is None:
                continue
            try:
                self._read(_record(raw, name))
            except LeptonError as exc:
                problems.append(exc.message)
        return problems

    def gc(self, *, min_age: float = 3600.0) -> int:
        """Remove content no record refers to and abort interrupted multipart uploads,
        both older than ``min_age`` seconds (a concurrent ``put`` uploads its content a
        moment before its record)."""
        referenced = set()
        for name, raw in self._records():
            try:
                info = _record(raw or b"", name)
            except IntegrityError:
                continue
            referenced.add(self._blob_name(info.sha256, info.encrypted))
        cutoff = time.time() - min_age
        removed = 0
        for name, modified in self._names("blobs/"):
            if name not in referenced and modified <= cutoff:
                self.client.delete_object(Bucket=self.bucket, Key=name)
                removed += 1
        uploads = self.client.list_multipart_uploads(Bucket=self.bucket, Prefix=self.prefix)
        for upload in uploads.get("Uploads", []):
            if upload["Initiated"].timestamp() <= cutoff:
                self.client.abort_multipart_upload(
                    Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                )
                removed += 1
        return removed


def _record(raw: bytes, where: str) -> ArtifactInfo:
    try:
        return ArtifactInfo(**json.loads(raw))
    except (ValueError, TypeError):
        raise IntegrityError(f"the record {where!r} is corrupt; run verify()") from None


def _status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None) or {}
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return int(status) if status is not None else None


def _reason(exc: BaseException) -> str:
    response = getattr(exc, "response", None) or {}
    error = response.get("Error") or {}
    if error:
        return f"{error.get('Code', '?')}: {error.get('Message', '')}".rstrip(": ")
    return f"{type(exc).__name__}: {exc}"
