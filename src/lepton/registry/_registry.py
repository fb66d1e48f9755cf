"""The model registry: named models, immutable versions, stages and aliases.

A version is written in three steps so that a crash never exposes half of one:
the version number is reserved as ``pending`` (one transaction), its files go to the
content-addressed artifact store (each write atomic), and one last transaction stores
the manifest and flips it to ``ready``. Only ``ready`` versions are visible to loaders.
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import safetensors.torch
import torch
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from torch import nn

from lepton._procs import pid_alive
from lepton._version import __version__
from lepton.errors import ModelNotFoundError, RegistryError, UnknownModelError
from lepton.models import model_spec
from lepton.registry._card import model_card
from lepton.storage import Database, artifact_store, open_database, record_dataset_use
from lepton.storage.schema import ModelAliasRow, ModelVersionRow, RegisteredModelRow

__all__ = [
    "STAGES",
    "ModelVersion",
    "reconcile_versions",
    "register",
    "resolve",
    "set_alias",
    "set_stage",
]

STAGES = ("staging", "production", "archived")
_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,99}")


@dataclass(frozen=True)
class ModelVersion:
    """One immutable, registered version of a model."""

    name: str
    version: int
    state: str
    stage: str | None
    aliases: tuple[str, ...]
    manifest: dict[str, Any]
    run_id: int | None
    created_at: float

    @property
    def ref(self) -> str:
        """``"name:version"``, what :func:`lepton.load_model` takes."""
        return f"{self.name}:{self.version}"

    @property
    def metrics(self) -> dict[str, float]:
        """The metrics recorded with the version."""
        return dict(self.manifest.get("metrics", {}))

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form."""
        return {**self.__dict__, "aliases": list(self.aliases), "ref": self.ref}


def next_version(session: Session, name: str, description: str) -> int:
    """The next version number of ``name``, creating the model on its first version."""
    if session.get(RegisteredModelRow, name) is None:
        session.add(RegisteredModelRow(name=name, description=description, created_at=time.time()))
        session.flush()
    latest = session.scalar(
        select(func.max(ModelVersionRow.version)).where(ModelVersionRow.model_name == name)
    )
    return (latest or 0) + 1


def validate_name(name: str) -> str:
    """A model name: lowercase letters, digits, ``.``, ``_``, ``-`` (1-100 characters)."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise RegistryError(
            f"invalid model name {name!r}: use 1-100 lowercase letters, digits, '.', '_' or '-', "
            f"starting with a letter or digit (e.g. 'mnist-convnet')"
        )
    return name


def _freeze(
    db: Database, row: ModelVersionRow, aliases: dict[int, list[str]] | None = None
) -> ModelVersion:
    """Freeze a row; pass ``aliases`` (version -> names) to avoid one query per row."""
    if aliases is None:
        aliases = aliases_of(db, row.model_name)
    return ModelVersion(
        name=row.model_name,
        version=row.version,
        state=row.state,
        stage=row.stage,
        aliases=tuple(sorted(aliases.get(row.version, []))),
        manifest=dict(row.manifest),
        run_id=row.run_id,
        created_at=row.created_at,
    )


def reconcile_versions(db: Database) -> int:
    """Mark ``pending`` versions of this host whose writing process is gone as ``failed``.

    A process killed while it registers (``kill -9``, a power cut) leaves its version
    pending; this is how such a version stops blocking its number and never looks
    usable. Its files, if any were written, stay unreferenced. Returns how many were marked.
    """
    host, marked = socket.gethostname(), 0
    with db.session() as s:
        rows = s.scalars(
            select(ModelVersionRow).where(
                ModelVersionRow.state == "pending", ModelVersionRow.owner_host == host
            )
        )
        for row in rows:
            pid = row.owner_pid
            if pid is not None and pid != os.getpid() and not pid_alive(pid):
                row.state = "failed"
                marked += 1
    return marked


def aliases_of(db: Database, name: str) -> dict[int, list[str]]:
    """Every alias of model ``name``, by version."""
    out: dict[int, list[str]] = {}
    with db.session() as s:
        for alias, version in s.execute(
            select(ModelAliasRow.alias, ModelAliasRow.version).where(
                ModelAliasRow.model_name == name
            )
        ):
            out.setdefault(version, []).append(alias)
    return out


def checked_lineage(lineage: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A copy of ``lineage`` that survives JSON unchanged, or a :class:`RegistryError`."""
    if lineage is None:
        return None
    try:
        record = json.loads(json.dumps(dict(lineage), allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise RegistryError(
            f"lineage must be JSON-safe (strings, numbers, lists, dicts), got {exc}; e.g. "
            f"lineage={{'derived_from': 'mnist-convnet:1', 'recipe': {{'quantize': 'static'}}}}"
        ) from None
    return dict(record)


def _schemas(
    model: nn.Module, dataset: Any | None, spec: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    config = spec["config"]
    inputs: dict[str, Any] = {"dtype": "float32"}
    outputs: dict[str, Any] = {}
    if dataset is not None:
        custom = getattr(dataset, "input_schema", None)  # e.g. text: no tensor shape
        if isinstance(custom, dict):
            inputs = dict(custom)
        else:
            inputs["shape"] = list(dataset.input_shape)
        if getattr(dataset, "task", None) == "classification":
            outputs = {"kind": "logits", "classes": list(dataset.classes)}
        else:
            outputs = {"kind": "values"}
    if config.get("num_classes"):
        outputs.setdefault("kind", "logits")
        outputs["num_classes"] = config["num_classes"]
    return inputs, outputs


def register(
    model: nn.Module,
    name: str,
    *,
    metrics: dict[str, float] | None = None,
    dataset: Any | None = None,
    run: Any | None = None,
    description: str = "",
    lineage: Mapping[str, Any] | None = None,
    database: Database | None = None,
    privacy: Mapping[str, Any] | None = None,
) -> ModelVersion:
    """Register ``model`` as the next version of ``name`` (created if new).

    Args:
        model: A model from :mod:`lepton.models` (or any class registered with
            ``register_model``), so the registry can rebuild it from its manifest.
        name: The model's name, e.g. ``"mnist-convnet"``.
        metrics: Metrics to record (e.g. ``result.metrics`` from ``lp.fit``).
        dataset: The training dataset: its fingerprint (lineage), input shape, classes and
            preprocessing statistics go into the manifest.
        run: The tracking run that produced it (default: the active run, if any).
        description: Free text for the model card.
        lineage: Where the model came from when it was derived from another version,
            e.g. ``{"derived_from": "mnist-convnet:1", "recipe": {...}}`` (JSON-safe;
            :mod:`lepton.compress` writes it); stored as the manifest's ``lineage``.
        privacy: The differential-privacy guarantee of the training run
            (``result.privacy`` from ``lp.fit(..., privacy=lp.privacy.DPSGD(...))``);
            stored as the manifest's ``privacy`` and stated on the model card.

    Returns:
        The new ``ready`` :class:`ModelVersion`.

    Example:
        >>> version = lp.register(model, "mnist-convnet", metrics=result.metrics,
        ...                       dataset=train)  # doctest: +SKIP
        >>> version.ref
        'mnist-convnet:1'
    """
    validate_name(name)
    lineage_record = checked_lineage(lineage)
    inner = getattr(model, "model", None)
    if not isinstance(model, nn.Module) and isinstance(inner, nn.Module):
        model = inner  # a wrapper such as lp.vision.Detector: its network is what is stored
    try:
        spec = model_spec(model)
    except UnknownModelError as exc:
        raise RegistryError(
            f"{exc.message} The registry rebuilds models from their architecture; for another "
            f"framework's model, export it to ONNX and register the file"
        ) from None
    if run is None:
        from lepton.tracking import active_run

        run = active_run()
    db = database or open_database()
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    weights = safetensors.torch.save(state)
    with db.session() as s:  # 1. reserve the version number
        row = ModelVersionRow(
            model_name=name,
            version=next_version(s, name, description),
            state="pending",
            manifest={},
            run_id=run.id if run is not None else None,
            created_at=time.time(),
            owner_host=socket.gethostname(),
            owner_pid=os.getpid(),
        )
        s.add(row)
        s.flush()
        row_id, version = row.id, row.version
    try:  # 2. files, each written atomically and content-addressed
        store, prefix = artifact_store(), f"models/{name}/{version}"
        weights_info = store.put(f"{prefix}/model.safetensors", weights)
        inputs, outputs = _schemas(model, dataset, spec)
        manifest: dict[str, Any] = {
            "format": 1,
            "kind": "pytorch",
            "name": name,
            "version": version,
            "description": description,
            "architecture": spec,
            "input_schema": inputs,
            "output_schema": outputs,
            "preprocessing": list(getattr(dataset, "preprocessing", []) or []),
            "metrics": {k: float(v) for k, v in (metrics or {}).items()},
            "dataset": {
                "name": dataset.name,
                "rows": len(dataset),
                "fingerprint": dataset.fingerprint(),
            }
            if dataset is not None
            else None,
            "run_id": run.id if run is not None else None,
            "lepton_version": __version__,
            "torch_version": torch.__version__,
            "parameters": sum(p.numel() for p in model.parameters()),
            "files": {
                "model.safetensors": {"sha256": weights_info.sha256, "size": weights_info.size}
            },
        }
        if lineage_record is not None:
            manifest["lineage"] = lineage_record
        if privacy is not None:
            manifest["privacy"] = json.loads(json.dumps(dict(privacy), default=str))
        store.put(f"{prefix}/manifest.json", json.dumps(manifest, indent=2).encode())
        store.put(f"{prefix}/MODEL_CARD.md", model_card(manifest).encode())
    except BaseException:
        with db.session() as s:
            failed = s.get(ModelVersionRow, row_id)
            if failed is not None:
                failed.state = "failed"
        raise
    with db.session() as s:  # 3. publish
        published = s.get(ModelVersionRow, row_id)
        assert published is not None
        published.manifest, published.state = manifest, "ready"
        s.flush()
        s.expunge(published)
    if manifest["dataset"] is not None:  # lineage: the versions of that content list it
        record_dataset_use(db, manifest["dataset"]["fingerprint"], model=f"{name}:{version}")
    return _freeze(db, published)


_REF = re.compile(r"(?P<name>[^:@]+)(?::(?P<version>\d+)|@(?P<tag>[a-z0-9_-]+))?")


def resolve(ref: str, *, database: Database | None = None, ready_only: bool = True) -> ModelVersion:
    """Find a version: ``"name:3"``, ``"name@production"`` (alias or stage) or ``"name"``
    (the newest ready version)."""
    match = _REF.fullmatch(ref.strip()) if isinstance(ref, str) else None
    if match is None:
        raise RegistryError(
            f"bad model reference {ref!r}; use 'name', 'name:VERSION' or 'name@ALIAS_OR_STAGE'"
        )
    name, version, tag = match["name"], match["version"], match["tag"]
    db = database or open_database()
    with db.session() as s:
        query = select(ModelVersionRow).where(ModelVersionRow.model_name == name)
        if ready_only:
            query = query.where(ModelVersionRow.state == "ready")
        if version is not None:
            query = query.where(ModelVersionRow.version == int(version))
        elif tag is not None:
            alias = s.get(ModelAliasRow, (name, tag))
            if alias is not None:
                query = query.where(ModelVersionRow.version == alias.version)
            else:
                query = query.where(ModelVersionRow.stage == tag)
        row = s.scalars(query.order_by(ModelVersionRow.version.desc()).limit(1)).first()
        if row is None:
            known = s.get(RegisteredModelRow, name) is not None
            hint = "see `lepton models show " + name + "`" if known else "see `lepton models list`"
            raise ModelNotFoundError(f"no ready model version matches {ref!r}; {hint}")
        s.expunge(row)
    return _freeze(db, row)


def set_stage(ref: str, stage: str, *, database: Database | None = None) -> ModelVersion:
    """Move a version to ``staging``, ``production`` or ``archived``."""
    if stage not in STAGES:
        raise RegistryError(f"stage must be one of {', '.join(STAGES)}, got {stage!r}")
    db = database or open_database()
    target = resolve(ref, database=db)
    with db.session() as s:
        row = s.scalars(
            select(ModelVersionRow).where(
                ModelVersionRow.model_name == target.name, ModelVersionRow.version == target.version
            )
        ).one()
        row.stage = stage
    return resolve(target.ref, database=db)


def set_alias(ref: str, alias: str, *, database: Database | None = None) -> ModelVersion:
    """Point ``name@alias`` at a version (moving it if it pointed elsewhere)."""
    if not re.fullmatch(r"[a-z0-9_-]{1,64}", alias) or alias in STAGES:
        raise RegistryError(
            f"invalid alias {alias!r}: use 1-64 lowercase letters, digits, '_' or '-', not a "
            f"stage name ({', '.join(STAGES)})"
        )
    db = database or open_database()
    target = resolve(ref, database=db)
    with db.session() as s:
        s.merge(ModelAliasRow(model_name=target.name, alias=alias, version=target.version))
    return resolve(target.ref, database=db)
