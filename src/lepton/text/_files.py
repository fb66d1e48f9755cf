"""Saved folders of ``lepton.text`` objects: JSON, safetensors and copied tokenizer files,
never a pickle. ``config.json`` records the SHA-256 of every other file, checked on load."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from lepton.errors import TextError

__all__ = ["read_folder", "write_folder"]


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_folder(
    path: str | Path,
    kind: str,
    config: Mapping[str, Any],
    *,
    tensors: Mapping[str, torch.Tensor] | None = None,
    files: Mapping[str, bytes] | None = None,
) -> Path:
    """Write ``config.json`` (with ``format`` and file hashes), ``weights.safetensors``
    and any extra files into the folder ``path`` (created)."""
    from safetensors.torch import save

    folder = Path(path).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    payload = dict(files or {})
    if tensors:
        payload["weights.safetensors"] = save(
            {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
        )
    for name, data in payload.items():
        (folder / name).write_bytes(data)
    record = {"format": kind, **config, "files": {n: _sha(d) for n, d in payload.items()}}
    (folder / "config.json").write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    return folder


def read_folder(
    path: str | Path, kind: str
) -> tuple[dict[str, Any], dict[str, torch.Tensor], dict[str, bytes]]:
    """``(config, tensors, files)`` of a folder written by :func:`write_folder` for
    ``kind``; every file's hash is checked."""
    from safetensors.torch import load

    folder = Path(path).expanduser()
    try:
        config = json.loads((folder / "config.json").read_text())
    except FileNotFoundError:
        raise TextError(
            f"{folder} holds no config.json; pass a folder written by .save()"
        ) from None
    except json.JSONDecodeError as exc:
        raise TextError(f"{folder}/config.json is not JSON ({exc.msg}); save it again") from None
    if not isinstance(config, dict) or config.get("format") != kind:
        found = config.get("format") if isinstance(config, dict) else None
        raise TextError(f"{folder} holds a {found!r}, not a {kind!r}; load it with its own class")
    files: dict[str, bytes] = {}
    for name, digest in dict(config.get("files", {})).items():
        if "/" in name or "\\" in name or name.startswith("."):
            raise TextError(f"{folder}/config.json names a file outside the folder: {name!r}")
        try:
            data = (folder / name).read_bytes()
        except FileNotFoundError:
            raise TextError(
                f"{folder} lacks {name}; the folder is incomplete: save it again"
            ) from None
        if _sha(data) != digest:
            raise TextError(
                f"{folder}/{name} does not match the hash in config.json; it was changed or "
                f"corrupted: save the model again"
            )
        files[name] = data
    tensors = load(files.pop("weights.safetensors")) if "weights.safetensors" in files else {}
    return config, tensors, files
