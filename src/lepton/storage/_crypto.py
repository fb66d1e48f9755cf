"""Encryption at rest: AES-256-GCM from ``cryptography``, one fresh nonce per write.

An encrypted blob is ``MAGIC | nonce (12 bytes) | ciphertext | tag (16 bytes)``; the
blob's content hash is bound to it as associated data, so a blob moved under another
name fails to decrypt instead of yielding the wrong content.
"""

from __future__ import annotations

import base64
import binascii
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from lepton.config import Settings, get_settings
from lepton.errors import EncryptionError

__all__ = ["Cipher", "generate_key"]

MAGIC = b"LPAES1\n"
_NONCE = 12


def generate_key() -> str:
    """A new random key, ready for ``LEPTON_ENCRYPTION_KEY``."""
    return base64.urlsafe_b64encode(AESGCM.generate_key(bit_length=256)).decode()


class Cipher:
    """AES-256-GCM with one key.

    Args:
        key: 32 raw bytes, or their URL-safe base64 text.
    """

    def __init__(self, key: bytes | str) -> None:
        raw = key
        if isinstance(key, str):
            try:
                raw = base64.urlsafe_b64decode(key.strip().encode())
            except (binascii.Error, ValueError):
                raw = b""
        if not isinstance(raw, bytes) or len(raw) != 32:
            raise EncryptionError(
                "an encryption key must be 32 bytes, given as URL-safe base64; make one with "
                "`python -c 'import lepton.storage as s; print(s.generate_key())'`"
            )
        self._aead = AESGCM(raw)

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> Cipher | None:
        """The cipher configured by ``LEPTON_ENCRYPTION_KEY(_FILE)``, or ``None``."""
        settings = settings or get_settings()
        if settings.encryption_key is not None:
            return cls(settings.encryption_key.get_secret_value())
        if settings.encryption_key_file is not None:
            try:
                return cls(settings.encryption_key_file.read_text())
            except OSError as exc:
                raise EncryptionError(
                    f"cannot read the key file {settings.encryption_key_file} ({exc.strerror}); "
                    f"fix LEPTON_ENCRYPTION_KEY_FILE"
                ) from None
        return None

    def encrypt(self, data: bytes, context: bytes) -> bytes:
        """Encrypt ``data``, authenticating ``context`` (e.g. the content hash) with it."""
        nonce = os.urandom(_NONCE)
        return MAGIC + nonce + self._aead.encrypt(nonce, data, context)

    def decrypt(self, blob: bytes, context: bytes) -> bytes:
        """Inverse of :meth:`encrypt`; a wrong key or altered bytes raise EncryptionError."""
        if not blob.startswith(MAGIC):
            raise EncryptionError("not an encrypted Lepton blob (bad header)")
        nonce = blob[len(MAGIC) : len(MAGIC) + _NONCE]
        try:
            return self._aead.decrypt(nonce, blob[len(MAGIC) + _NONCE :], context)
        except InvalidTag:
            raise EncryptionError(
                "decryption failed: the encryption key is not the one this artifact was written "
                "with, or the stored bytes were altered"
            ) from None
