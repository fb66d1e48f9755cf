"""ONNX: export a registered version, and register an ONNX file from any framework.

Needs ``pip install 'lepton[onnx]'`` (onnx, onnxruntime, onnxscript); imported lazily.
"""

from __future__ import annotations

import hashlib
import logging
import math
import tempfile
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from lepton._fs import atomic_write_bytes
from lepton._version import __version__
from lepton.errors import RegistryError
from lepton.registry._artifact_check import ARTIFACT_FILES, need_onnx, parse_onnx
from lepton.registry._load import check_not_pickle, load_model
from lepton.registry._onnx_runtime import OnnxModule
from lepton.registry._registry import (
    ModelVersion,
    _freeze,
    checked_lineage,
    next_version,
    resolve,
    validate_name,
)
from lepton.storage import Database, artifact_store, open_database
from lepton.storage.schema import ModelVersionRow

__all__ = ["OnnxModule", "export_onnx", "onnx_bytes", "register_onnx"]


def _example_input(version: ModelVersion) -> torch.Tensor:
    shape = version.manifest.get("input_schema", {}).get("shape")
    config = version.manifest["architecture"]["config"]
    if shape is None:
        if "in_features" in config:
            shape = [config["in_features"]]
        elif "input_size" in config:
            size = config["input_size"]
            hw = [size, size] if isinstance(size, int) else list(size)
            shape = [config.get("in_channels", 1), *hw]
        else:
            raise RegistryError(
                f"{version.ref} records no input shape; register it with dataset= so the "
                f"exporter knows the input layout"
            )
    return torch.randn(2, *shape)


def onnx_bytes(model: torch.nn.Module, example: torch.Tensor) -> bytes:
    """``model`` as one self-contained ONNX file whose first axis (the batch) is dynamic.

    Uses the dynamo exporter (onnxscript); ``example`` needs a batch of at least 2, or
    the exporter would fix the batch size to 1.
    """
    need_onnx()
    with warnings.catch_warnings(), tempfile.TemporaryDirectory() as tmp:
        warnings.simplefilter("ignore")
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)
        program = torch.onnx.export(
            model, (example,), dynamo=True, dynamic_shapes=({0: "batch"},), external_data=False,
            verbose=False,
        )  # fmt: skip
        assert program is not None
        scratch = Path(tmp) / "model.onnx"
        program.save(str(scratch), external_data=False)
        return scratch.read_bytes()


def export_onnx(ref: str, path: str | Path, *, database: Database | None = None) -> dict[str, Any]:
    """Export a registered PyTorch version to one ONNX file (dynamic batch size).

    The export is checked: onnxruntime and PyTorch must agree on a random batch.

    Returns:
        ``{"path", "bytes", "max_abs_diff", "seconds"}``.
    """
    need_onnx()
    version = resolve(ref, database=database)
    if version.manifest.get("kind") == "onnx":
        raise RegistryError(f"{version.ref} is already an ONNX model")
    model = load_model(version.ref, database=database)
    example = _example_input(version)
    started = time.perf_counter()
    data = onnx_bytes(model, example)
    check = torch.randn(5, *example.shape[1:])
    with torch.no_grad():
        diff = float((OnnxModule(data)(check) - model(check)).abs().max())
    if not diff < 1e-3:
        raise RegistryError(f"the ONNX export of {version.ref} disagrees with PyTorch by {diff}")
    atomic_write_bytes(path, data)
    return {"path": str(path), "bytes": len(data), "max_abs_diff": diff,
            "seconds": time.perf_counter() - started}  # fmt: skip


def _shape(value_info: Any) -> list[int | str]:
    dims = value_info.type.tensor_type.shape.dim
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in dims]


def register_onnx(
    path: str | Path,
    name: str,
    *,
    metrics: dict[str, float] | None = None,
    description: str = "",
    classes: list[str] | None = None,
    preprocessing: list[dict[str, Any]] | None = None,
    lineage: Mapping[str, Any] | None = None,
    database: Database | None = None,
) -> ModelVersion:
    """Register an ONNX file (from PyTorch, scikit-learn, TensorFlow, ...) as a version.

    Args:
        classes: For a classifier whose first output is logits: the class names, in
            output order. A deployment then answers labels and probabilities; without
            them it answers the raw output values.
        preprocessing: The steps a deployment replays on raw inputs before the graph
            (a dataset's ``preprocessing``), e.g. those of the version it was exported from.
        lineage: The version it derives from and how (``{"derived_from": "name:1",
            "recipe": {...}}``), stored as the manifest's ``lineage``.
    """
    validate_name(name)
    lineage_record = checked_lineage(lineage)
    source = check_not_pickle(path)
    try:
        data = source.read_bytes()
    except OSError as exc:
        raise RegistryError(f"cannot read {source} ({exc.strerror}); check the path") from None
    # refuses a model that references anything outside itself (external data), before
    # onnx's checker or onnxruntime could look for such a file
    graph_model = parse_onnx(data)
    OnnxModule(data)  # onnxruntime must be able to run it
    graph = graph_model.graph
    db = database or open_database()
    manifest: dict[str, Any] = {
        "format": 1,
        "kind": "onnx",
        "name": name,
        "description": description,
        "architecture": None,
        "input_schema": {"name": graph.input[0].name, "shape": _shape(graph.input[0])},
        "output_schema": {
            "name": graph.output[0].name,
            "shape": _shape(graph.output[0]),
            **(
                {
                    "kind": "logits",
                    "classes": [str(c) for c in classes],
                    "num_classes": len(classes),
                }
                if classes
                else {}
            ),
        },
        "preprocessing": [dict(step) for step in preprocessing or []],
        "metrics": {k: float(v) for k, v in (metrics or {}).items() if math.isfinite(v)},
        "dataset": None,
        "run_id": None,
        "lepton_version": __version__,
        "opset": [{"domain": o.domain, "version": o.version} for o in graph_model.opset_import],
        "files": {
            ARTIFACT_FILES["onnx"]: {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
        },
    }
    if lineage_record is not None:
        manifest["lineage"] = lineage_record
    with db.session() as s:
        version = next_version(s, name, description)
        manifest["version"] = version
        artifact_store().put(f"models/{name}/{version}/{ARTIFACT_FILES['onnx']}", data)
        row = ModelVersionRow(model_name=name, version=version, state="ready", manifest=manifest,
                         created_at=time.time())  # fmt: skip
        s.add(row)
        s.flush()
        s.expunge(row)
    return _freeze(db, row)
