"""Loading registered versions back, listing and deleting them. Never unpickles anything."""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from sqlalchemy import select
from torch import nn

from lepton.errors import IntegrityError, ModelNotFoundError, UnsafeFormatError
from lepton.models import available_models, build
from lepton.registry._artifact_check import artifact_file
from lepton.registry._onnx_runtime import OnnxModule
from lepton.registry._registry import ModelVersion, _freeze, aliases_of, resolve
from lepton.storage import Database, artifact_store, open_database
from lepton.storage.schema import ModelAliasRow, ModelVersionRow, RegisteredModelRow

__all__ = ["check_not_pickle", "delete_version", "list_models", "list_versions", "load_model"]

PICKLE_SUFFIXES = {".pt", ".pth", ".pkl", ".pickle", ".joblib", ".ckpt", ".bin", ".sav"}


def check_not_pickle(path: str | Path) -> Path:
    """Refuse files that are (or may be) pickles: by name and by their first bytes.

    Pickles run arbitrary code when loaded; ``torch.save`` files are zip archives that
    hold one. Lepton reads weights only from safetensors (and models from ONNX).
    """
    p = Path(path)
    head = p.read_bytes()[:4] if p.exists() else b""
    # protocol 2+ pickles start with 0x80; torch.save writes a zip ("PK\x03\x04")
    if p.suffix.lower() in PICKLE_SUFFIXES or head[:1] == b"\x80" or head[:2] == b"PK":
        raise UnsafeFormatError(
            f"{p} is a pickle-based file ({p.suffix or 'by its content'}); Lepton never loads "
            f"pickles because they can run code. Save weights with safetensors "
            f"(safetensors.torch.save_file(model.state_dict(), 'model.safetensors')) or export "
            f"the model to ONNX, then register that"
        )
    return p


def load_model(ref: str, *, database: Database | None = None) -> nn.Module:
    """Rebuild a registered model from its manifest, after checking every file's hash.

    Args:
        ref: ``"name:3"``, ``"name@production"`` or ``"name"`` (newest ready version).

    Returns:
        The model in eval mode.

    Raises:
        RegistryError: No ready version matches.
        IntegrityError: A stored file does not match the hash in the manifest, or the
            manifest lists a file other than its kind's one file.
        UnsafeFormatError: ``ref`` names a pickle file, or an ONNX version references
            data outside itself.
    """
    if isinstance(ref, (str, Path)) and Path(str(ref)).suffix.lower() in PICKLE_SUFFIXES:
        check_not_pickle(ref)
    version = resolve(str(ref), database=database)
    # the manifest may name only its kind's one file, inside this version's prefix
    kind, file_name, sha256 = artifact_file(version.ref, version.manifest)
    store, key = artifact_store(), f"models/{version.name}/{version.version}/{file_name}"
    if store.info(key).sha256 != sha256:
        raise IntegrityError(
            f"{version.ref}: {file_name} does not match the hash in its manifest; the "
            f"version was tampered with: register the model again"
        )
    data = store.get(key)  # re-hashed while reading
    return LOADERS[kind](version, data).eval()


#: Architectures whose classes live in a package above the registry (a solution package),
#: by the name of the package that registers them. The registry may not import upward, so
#: it imports that package by name the first time a version of one is loaded: a
#: ``lp.load_model`` of a recommender works without ``import lepton.recommend`` first.
MODEL_PACKAGES: dict[str, str] = {
    "recommender-mf": "lepton.recommend",
    "kg-embedding": "lepton.graph",
    "text-classifier": "lepton.text",
    "image-diffusion": "lepton.vision",
    "image-vae": "lepton.vision",
    "text-tfidf": "lepton.text",
    "text-index": "lepton.text",
    "text-assistant": "lepton.text",
    "vision-centernet": "lepton.vision",
}


def _import_provider(architecture: object) -> None:
    name = architecture.get("name") if isinstance(architecture, dict) else architecture
    package = MODEL_PACKAGES.get(name) if isinstance(name, str) else None
    if package is not None and name not in available_models():
        importlib.import_module(package)  # its @register_model runs on import


def _load_pytorch(version: ModelVersion, data: bytes) -> nn.Module:
    _import_provider(version.manifest["architecture"])
    model = build(version.manifest["architecture"])
    try:
        state = load_safetensors(data)  # plain tensors: no code can run
    except SafetensorError as exc:
        raise IntegrityError(f"{version.ref}: unreadable weights ({exc})") from None
    model.load_state_dict(state)
    return model


def _load_onnx(version: ModelVersion, data: bytes) -> nn.Module:
    return OnnxModule(data)  # refuses external data before onnxruntime sees the bytes


#: How each manifest ``kind`` becomes a module; every kind here has one file in
#: ``ARTIFACT_FILES`` and a refusal test in tests/unit/test_artifact_refs.py.
LOADERS: dict[str, Callable[[ModelVersion, bytes], nn.Module]] = {
    "pytorch": _load_pytorch,
    "onnx": _load_onnx,
}


def list_models(*, database: Database | None = None) -> list[dict[str, object]]:
    """Every registered model with its number of ready versions and the latest one."""
    db = database or open_database()
    out = []
    with db.session() as s:
        for model in s.scalars(select(RegisteredModelRow).order_by(RegisteredModelRow.name)):
            versions = s.scalars(
                select(ModelVersionRow.version).where(
                    ModelVersionRow.model_name == model.name, ModelVersionRow.state == "ready"
                )
            ).all()
            out.append(
                {
                    "name": model.name,
                    "versions": len(versions),
                    "latest": max(versions) if versions else None,
                    "description": model.description,
                }
            )
    return out


def list_versions(
    name: str, *, include_pending: bool = False, database: Database | None = None
) -> list[ModelVersion]:
    """Versions of ``name``, newest first (only ``ready`` ones unless asked)."""
    db = database or open_database()
    query = (
        select(ModelVersionRow)
        .where(ModelVersionRow.model_name == name)
        .order_by(ModelVersionRow.version.desc())
    )
    if not include_pending:
        query = query.where(ModelVersionRow.state == "ready")
    with db.session() as s:
        if s.get(RegisteredModelRow, name) is None:
            raise ModelNotFoundError(f"no model named {name!r}; see `lepton models list`")
        rows = list(s.scalars(query))
        s.expunge_all()
    aliases = aliases_of(db, name)
    return [_freeze(db, row, aliases) for row in rows]


def delete_version(ref: str, *, database: Database | None = None) -> ModelVersion:
    """Delete one version (its record, aliases and files)."""
    db = database or open_database()
    version = resolve(ref, database=db)
    store = artifact_store()
    with db.session() as s:
        for alias in s.scalars(
            select(ModelAliasRow).where(
                ModelAliasRow.model_name == version.name, ModelAliasRow.version == version.version
            )
        ):
            s.delete(alias)
        row = s.scalars(
            select(ModelVersionRow).where(
                ModelVersionRow.model_name == version.name,
                ModelVersionRow.version == version.version,
            )
        ).one()
        s.delete(row)
    for key in ("model.safetensors", "model.onnx", "manifest.json", "MODEL_CARD.md"):
        full = f"models/{version.name}/{version.version}/{key}"
        if store.exists(full):
            store.delete(full)
    return version


def model_card_text(ref: str, *, database: Database | None = None) -> str:
    """The generated model card of a version."""
    version = resolve(ref, database=database)
    return artifact_store().get(f"models/{version.name}/{version.version}/MODEL_CARD.md").decode()


def manifest_of(ref: str, *, database: Database | None = None) -> dict[str, object]:
    """The manifest as stored in the artifact store (identical to the database copy)."""
    version = resolve(ref, database=database)
    raw = artifact_store().get(f"models/{version.name}/{version.version}/manifest.json")
    return dict(json.loads(raw))
