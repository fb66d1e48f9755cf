"""Artifact keys: a strict grammar, so that no key can name a path outside the store.

A key is one or more ``/``-separated segments, each of letters, digits, ``.``, ``_``
and ``-``, not ``.`` or ``..`` and not starting with ``.``. Everything else is refused
before any file is touched: absolute paths, backslashes, ``#``, ``;``, ``%`` (so no
percent-encoded ``..%2f``), control characters, spaces, empty segments.
"""

from __future__ import annotations

import re
from pathlib import Path

from lepton.errors import InvalidKeyError

__all__ = ["MAX_KEY_LENGTH", "resolve_inside", "validate_key"]

MAX_KEY_LENGTH = 512
_SEGMENT = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}")


def validate_key(key: object) -> str:
    """Return ``key`` if it is a valid artifact key, else raise :class:`InvalidKeyError`."""
    if not isinstance(key, str) or not key:
        raise InvalidKeyError(f"an artifact key must be a non-empty string, got {key!r}")
    if len(key) > MAX_KEY_LENGTH:
        raise InvalidKeyError(
            f"artifact key is {len(key)} characters; the limit is {MAX_KEY_LENGTH}"
        )
    for segment in key.split("/"):
        if not _SEGMENT.fullmatch(segment) or segment.endswith("."):
            raise InvalidKeyError(
                f"invalid artifact key {key!r}: segment {segment!r} is not allowed; use "
                f"'/'-separated names of letters, digits, '.', '_' and '-' (e.g. "
                f"'runs/12/model.safetensors'), with no '..', leading '/', '\\\\', '%', '#' or ';'"
            )
    return key


def resolve_inside(root: Path, relative: str) -> Path:
    """``root / relative``, checked (after resolving links) to stay inside ``root``."""
    base = root.resolve()
    target = (base / relative).resolve()
    if target != base and base not in target.parents:
        raise InvalidKeyError(f"artifact key {relative!r} resolves outside the store; refused")
    return target
