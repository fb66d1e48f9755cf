"""One contract suite, run over every artifact-store backend: a local folder and an
S3-compatible server (moto's, on 127.0.0.1), each plain and encrypted."""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from lepton.config import get_settings
from lepton.errors import (
    ArtifactNotFoundError,
    EncryptionError,
    IntegrityError,
    InvalidKeyError,
)
from lepton.storage import (
    ArtifactStore,
    Cipher,
    LocalArtifactStore,
    S3ArtifactStore,
    generate_key,
)

KEY = generate_key()
BACKENDS: dict[str, Callable[[Path], ArtifactStore]] = {
    "local": lambda root: LocalArtifactStore(root),
    "local-encrypted": lambda root: LocalArtifactStore(root, cipher=Cipher(KEY)),
}
S3_BACKENDS = {"s3": None, "s3-encrypted": Cipher(KEY)}
_BUCKETS = itertools.count()


def s3_store(endpoint: str, cipher: Cipher | None = None) -> S3ArtifactStore:
    """A store on a new bucket of the test server, under a prefix."""
    from s3 import client

    bucket = f"lepton-{os.getpid()}-{next(_BUCKETS)}"
    s3 = client(endpoint)
    s3.create_bucket(Bucket=bucket)
    return S3ArtifactStore(f"s3://{bucket}/team/artifacts", cipher=cipher, client=s3)


@pytest.fixture(params=[*BACKENDS, *S3_BACKENDS])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ArtifactStore:
    if request.param in S3_BACKENDS:
        return s3_store(request.getfixturevalue("s3_endpoint"), S3_BACKENDS[request.param])
    return BACKENDS[request.param](tmp_path / "store")


class Blob:
    """The stored bytes of a store's one blob, read and written behind its back, as disk
    corruption or someone with bucket access would."""

    def __init__(self, store: ArtifactStore, root: Path) -> None:
        self.store = store
        if isinstance(store, S3ArtifactStore):
            [self.name] = [o["Key"] for o in store.client.list_objects_v2(
                Bucket=store.bucket, Prefix=f"{store.prefix}blobs/")["Contents"]]  # fmt: skip
        else:
            self.path = next(p for p in (root / "blobs").glob("*/*") if not p.name.startswith("."))

    def read(self) -> bytes:
        if isinstance(self.store, S3ArtifactStore):
            answer = self.store.client.get_object(Bucket=self.store.bucket, Key=self.name)
            return bytes(answer["Body"].read())
        return self.path.read_bytes()

    def write(self, data: bytes) -> None:
        if isinstance(self.store, S3ArtifactStore):
            self.store.client.put_object(Bucket=self.store.bucket, Key=self.name, Body=data)
        else:
            self.path.write_bytes(data)

    def remove(self) -> None:
        if isinstance(self.store, S3ArtifactStore):
            self.store.client.delete_object(Bucket=self.store.bucket, Key=self.name)
        else:
            self.path.unlink()


def test_put_get_round_trip(store: ArtifactStore) -> None:
    data = os.urandom(100_000)
    info = store.put("runs/1/model.safetensors", data)
    assert info.size == len(data)
    assert store.get("runs/1/model.safetensors") == data
    assert store.exists("runs/1/model.safetensors")
    assert store.info("runs/1/model.safetensors").sha256 == info.sha256
    store.put("runs/1/model.safetensors", b"v2")
    assert store.get("runs/1/model.safetensors") == b"v2"
    assert store.verify() == []


def test_list_delete_and_gc(store: ArtifactStore) -> None:
    store.put("runs/1/a.json", b"{}")
    store.put("runs/1/b.json", b"{}")  # same content: stored once
    store.put("runs/2/a.json", b"other")
    assert [i.key for i in store.list("runs/1/")] == ["runs/1/a.json", "runs/1/b.json"]
    assert len(store.list()) == 3
    store.delete("runs/2/a.json")
    assert not store.exists("runs/2/a.json")
    with pytest.raises(ArtifactNotFoundError, match=r"store\.list"):
        store.get("runs/2/a.json")
    with pytest.raises(ArtifactNotFoundError, match=r"no artifact under key 'runs/2/a\.json'"):
        store.delete("runs/2/a.json")
    assert store.gc(min_age=0) == 1  # the content only runs/2/a.json referred to
    assert store.gc(min_age=0) == 0
    assert store.get("runs/1/b.json") == b"{}"
    assert store.verify() == []


def test_corruption_is_detected(store: ArtifactStore, tmp_path: Path) -> None:
    store.put("models/m/weights", b"x" * 1000)
    blob = Blob(store, tmp_path / "store")
    raw = bytearray(blob.read())
    raw[-20] ^= 0xFF
    blob.write(bytes(raw))
    with pytest.raises(
        (IntegrityError, EncryptionError),
        match=r"were altered|no longer matches its SHA-256.*restore it from a backup",
    ):
        store.get("models/m/weights")
    assert len(store.verify()) == 1
    blob.remove()
    with pytest.raises(
        IntegrityError,
        match=r"missing from the store.*restore it from a backup or put the artifact again",
    ):
        store.get("models/m/weights")


HOSTILE_KEYS = [
    "../canary.txt",
    "a/../../canary.txt",
    "/etc/passwd",
    "..\\canary.txt",
    "a\\..\\..\\canary.txt",
    "%2e%2e/canary.txt",
    "..%2fcanary.txt",
    "%2E%2E%2Fcanary.txt",
    "a#b",
    "a;rm -rf",
    "a\x00b",
    "a\nb",
    "\x1b[31m",
    "",
    ".",
    "..",
    "a//b",
    "a/./b",
    "a/",
    "~/canary.txt",
    ".hidden",
    "C:\\canary.txt",
    "a b",
    "ＡＢ",  # full-width letters
    "x" * 600,
]


# Each refusal says what a valid key looks like (or the one rule it broke).
INVALID_KEY_ADVICE = r"use '/'-separated names|must be a non-empty string|the limit is 512"


@pytest.mark.parametrize("key", HOSTILE_KEYS, ids=[repr(k)[:24] for k in HOSTILE_KEYS])
def test_hostile_keys_never_touch_the_canary(
    store: ArtifactStore, tmp_path: Path, key: str
) -> None:
    canary = tmp_path / "canary.txt"
    canary.write_text("untouched")
    before = canary.stat()
    for call in (
        lambda: store.put(key, b"pwned"),
        lambda: store.get(key),
        lambda: store.info(key),
        lambda: store.exists(key),
        lambda: store.delete(key),
    ):
        with pytest.raises(InvalidKeyError, match=INVALID_KEY_ADVICE):
            call()
    after = canary.stat()
    assert canary.read_text() == "untouched"
    assert (after.st_mtime_ns, after.st_atime_ns) == (before.st_mtime_ns, before.st_atime_ns)
    assert store.list() == []


def test_encrypted_content_is_not_plaintext_and_needs_the_key(tmp_path: Path) -> None:
    secret = b"the weights of a private model " * 10
    LocalArtifactStore(tmp_path, cipher=Cipher(KEY)).put("private", secret)
    blobs = list((tmp_path / "blobs").glob("*/*"))
    assert blobs, "the encrypted store wrote no blob"
    for blob in blobs:
        assert b"private model" not in blob.read_bytes()
    with pytest.raises(EncryptionError, match=r"is encrypted; set LEPTON_ENCRYPTION_KEY"):
        LocalArtifactStore(tmp_path).get("private")
    with pytest.raises(
        EncryptionError, match="the encryption key is not the one this artifact was written with"
    ):
        LocalArtifactStore(tmp_path, cipher=Cipher(generate_key())).get("private")
    assert LocalArtifactStore(tmp_path, cipher=Cipher(KEY)).get("private") == secret


def test_key_from_environment_or_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert Cipher.from_settings(get_settings()) is None
    monkeypatch.setenv("LEPTON_ENCRYPTION_KEY", KEY)
    cipher = Cipher.from_settings()
    assert cipher is not None
    assert cipher.decrypt(Cipher(KEY).encrypt(b"hi", b"ctx"), b"ctx") == b"hi"
    monkeypatch.delenv("LEPTON_ENCRYPTION_KEY")
    key_file = tmp_path / "key"
    key_file.write_text(KEY + "\n")
    monkeypatch.setenv("LEPTON_ENCRYPTION_KEY_FILE", str(key_file))
    assert Cipher.from_settings() is not None
    with pytest.raises(EncryptionError, match=r"must be 32 bytes.*make one with"):
        Cipher("too-short")
    monkeypatch.setenv("LEPTON_ENCRYPTION_KEY_FILE", str(tmp_path / "missing"))
    with pytest.raises(
        EncryptionError, match=r"cannot read the key file.*fix LEPTON_ENCRYPTION_KEY_FILE"
    ):
        Cipher.from_settings()
