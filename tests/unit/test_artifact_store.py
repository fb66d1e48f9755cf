"""One contract suite, run over every artifact-store backend (plain and encrypted local)."""

from __future__ import annotations

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
from lepton.storage import ArtifactStore, Cipher, LocalArtifactStore, generate_key

KEY = generate_key()
BACKENDS: dict[str, Callable[[Path], ArtifactStore]] = {
    "local": lambda root: LocalArtifactStore(root),
    "local-encrypted": lambda root: LocalArtifactStore(root, cipher=Cipher(KEY)),
}


@pytest.fixture(params=list(BACKENDS))
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ArtifactStore:
    return BACKENDS[request.param](tmp_path / "store")


def test_put_get_round_trip(store: ArtifactStore):
    data = os.urandom(100_000)
    info = store.put("runs/1/model.safetensors", data)
    assert info.size == len(data)
    assert store.get("runs/1/model.safetensors") == data
    assert store.exists("runs/1/model.safetensors")
    assert store.info("runs/1/model.safetensors").sha256 == info.sha256
    store.put("runs/1/model.safetensors", b"v2")
    assert store.get("runs/1/model.safetensors") == b"v2"
    assert store.verify() == []


def test_list_delete_and_gc(store: ArtifactStore):
    store.put("runs/1/a.json", b"{}")
    store.put("runs/1/b.json", b"{}")  # same content: stored once
    store.put("runs/2/a.json", b"other")
    assert [i.key for i in store.list("runs/1/")] == ["runs/1/a.json", "runs/1/b.json"]
    assert len(store.list()) == 3
    store.delete("runs/2/a.json")
    assert not store.exists("runs/2/a.json")
    with pytest.raises(ArtifactNotFoundError, match=r"store\.list"):
        store.get("runs/2/a.json")
    with pytest.raises(ArtifactNotFoundError):
        store.delete("runs/2/a.json")
    assert store.gc(min_age=0) == 1  # the content only runs/2/a.json referred to
    assert store.gc(min_age=0) == 0
    assert store.get("runs/1/b.json") == b"{}"
    assert store.verify() == []


def test_corruption_is_detected(store: ArtifactStore, tmp_path: Path):
    store.put("models/m/weights", b"x" * 1000)
    blob = next(p for p in (tmp_path / "store" / "blobs").glob("*/*") if not p.name.startswith("."))
    raw = bytearray(blob.read_bytes())
    raw[-20] ^= 0xFF
    blob.write_bytes(bytes(raw))
    with pytest.raises((IntegrityError, EncryptionError), match=r"altered|no longer matches"):
        store.get("models/m/weights")
    assert len(store.verify()) == 1
    blob.unlink()
    with pytest.raises(IntegrityError, match="missing"):
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


@pytest.mark.parametrize("key", HOSTILE_KEYS, ids=[repr(k)[:24] for k in HOSTILE_KEYS])
def test_hostile_keys_never_touch_the_canary(store: ArtifactStore, tmp_path: Path, key: str):
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
        with pytest.raises(InvalidKeyError):
            call()
    after = canary.stat()
    assert canary.read_text() == "untouched"
    assert (after.st_mtime_ns, after.st_atime_ns) == (before.st_mtime_ns, before.st_atime_ns)
    assert store.list() == []


def test_encrypted_content_is_not_plaintext_and_needs_the_key(tmp_path: Path):
    secret = b"the weights of a private model " * 10
    LocalArtifactStore(tmp_path, cipher=Cipher(KEY)).put("private", secret)
    for blob in (tmp_path / "blobs").glob("*/*"):
        assert b"private model" not in blob.read_bytes()
    with pytest.raises(EncryptionError, match="LEPTON_ENCRYPTION_KEY"):
        LocalArtifactStore(tmp_path).get("private")
    with pytest.raises(EncryptionError, match="not the one"):
        LocalArtifactStore(tmp_path, cipher=Cipher(generate_key())).get("private")
    assert LocalArtifactStore(tmp_path, cipher=Cipher(KEY)).get("private") == secret


def test_key_from_environment_or_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
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
    with pytest.raises(EncryptionError, match="32 bytes"):
        Cipher("too-short")
    monkeypatch.setenv("LEPTON_ENCRYPTION_KEY_FILE", str(tmp_path / "missing"))
    with pytest.raises(EncryptionError, match="LEPTON_ENCRYPTION_KEY_FILE"):
        Cipher.from_settings()
