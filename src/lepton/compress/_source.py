"""Where a step's model and data come from, and where its result goes.

A step takes a live ``nn.Module`` or a registry reference (``"name:1"``,
``"name@production"``). A reference is loaded through :mod:`lepton.registry`, and its
result is registered as a new version of the same model (or under ``register=``) whose
manifest's ``lineage`` says ``derived_from`` the original and by which recipe.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from lepton import registry
from lepton.compress._report import Compressed
from lepton.data import Dataset
from lepton.errors import CompressionError, ShapeError
from lepton.models import model_spec
from lepton.registry._artifact_check import artifact_file
from lepton.storage import Database, artifact_store
from lepton.train import evaluate
from lepton.train.recipe import catalog_name, load_data

__all__ = [
    "DataArg",
    "ModelArg",
    "RegisterArg",
    "Source",
    "check_inputs",
    "dataset",
    "figures",
    "logits",
    "open_source",
    "parity",
    "publish",
    "test_accuracy",
]

#: A model, a registry reference to one, or an earlier step's result.
ModelArg = nn.Module | str | Compressed
#: A dataset, or a catalog name (``"mnist"``) whose split the step chooses.
DataArg = Dataset | str
#: ``None``: register when the model came from the registry (under its name); a name:
#: register under it; ``False``: never.
RegisterArg = str | bool | None


@dataclass(frozen=True)
class Source:
    """The model a step starts from.

    Attributes:
        model: The module in eval mode (an ``OnnxModule`` for an ONNX version).
        version: The registered version it was loaded from, if any.
        onnx: The ONNX file's bytes, when the original is an ONNX model.
    """

    model: nn.Module
    version: registry.ModelVersion | None
    onnx: bytes | None

    @property
    def ref(self) -> str | None:
        """The original's registry reference, ``"name:version"``."""
        return self.version.ref if self.version is not None else None

    @property
    def classes(self) -> list[str] | None:
        """The class names its registered version recorded, if any."""
        if self.version is None:
            return None
        found = self.version.manifest.get("output_schema", {}).get("classes")
        return [str(c) for c in found] if found else None

    @property
    def preprocessing(self) -> list[dict[str, Any]]:
        """The steps a deployment replays before the model (from its manifest)."""
        if self.version is None:
            return []
        return [dict(s) for s in self.version.manifest.get("preprocessing") or []]

    def need_pytorch(self, step: str) -> nn.Module:
        """The module, or a clear error when the original is an ONNX model."""
        if self.onnx is not None:
            raise CompressionError(
                f"{step} needs a PyTorch model, and {self.ref or 'this model'} is ONNX; "
                f"{step} the PyTorch version it was exported from, then quantize the result"
            )
        return self.model


def open_source(model: ModelArg, *, database: Database | None = None) -> Source:
    """Resolve ``model``: a module is used as is, a reference is loaded (hash-checked), an
    earlier step's :class:`Compressed` result is taken with its ONNX bytes (so that
    ``quantize(export_onnx(model, sample), ...)`` exports once)."""
    if isinstance(model, Compressed):
        return Source(model=model.model, version=None, onnx=model.onnx)
    if isinstance(model, nn.Module):
        return Source(model=model, version=None, onnx=None)
    if not isinstance(model, str):
        raise CompressionError(
            f"model must be an nn.Module, a registry reference such as 'mnist-convnet:1' "
            f"or 'mnist-convnet@production', or a step's result, not {type(model).__name__}"
        )
    version = registry.resolve(model, database=database)
    loaded = registry.load_model(version.ref, database=database)
    onnx = None
    if version.manifest.get("kind") == "onnx":
        # the quantizer needs the file itself; load_model has just checked its hash
        _, file_name, _ = artifact_file(version.ref, version.manifest)
        onnx = artifact_store().get(f"models/{version.name}/{version.version}/{file_name}")
    return Source(model=loaded, version=version, onnx=onnx)


def dataset(data: DataArg, split: Literal["train", "test"], limit: int | None = None) -> Dataset:
    """``data`` itself, or catalog dataset ``data``'s ``split`` (first ``limit`` rows)."""
    if isinstance(data, Dataset):
        return data.subset(slice(0, limit)) if limit is not None and limit < len(data) else data
    if not isinstance(data, str):
        raise CompressionError(
            f"data must be a lepton.data.Dataset or a catalog name such as 'mnist', not "
            f"{type(data).__name__}"
        )
    try:
        name = catalog_name(data)
    except ValueError as exc:
        raise CompressionError(str(exc)) from None
    return load_data(name, split, limit)


def check_inputs(model: nn.Module, data: Dataset, role: str) -> None:
    """One tiny forward pass, so a dataset of the wrong shape fails with a clear error."""
    x = data.features[:2].float()
    try:
        with torch.no_grad():
            model(x)
    except Exception as exc:  # torch and onnxruntime fail in many types; all mean "shape"
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ShapeError(
            f"the {role} data {data.name!r} has inputs of shape {list(data.input_shape)}, "
            f"which the model cannot take ({first[:200]}); pass data shaped like the "
            f"model's training data"
        ) from None


@torch.no_grad()
def logits(model: nn.Module, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """``model``'s outputs on ``x``, in batches, in eval mode (its mode is restored)."""
    was_training = model.training
    model.eval()
    try:
        parts = [model(x[i : i + batch_size].float()) for i in range(0, len(x), batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(parts).float()


def parity(reference: torch.Tensor, result: torch.Tensor) -> tuple[float, float]:
    """``(max abs diff, fraction of rows with the same argmax)`` of two output batches."""
    diff = float((reference - result).abs().max())
    same = float((reference.argmax(dim=1) == result.argmax(dim=1)).float().mean())
    return (diff if math.isfinite(diff) else float("inf")), same


def test_accuracy(model: nn.Module, data: Dataset | None) -> float | None:
    """Top-1 accuracy on labelled classification data, else ``None``."""
    if data is None or data.task != "classification":
        return None
    return float(evaluate(model, data, device="cpu")["accuracy"])


def figures(
    test: Dataset | None,
    accuracy_before: float | None,
    accuracy_after: float | None,
    max_abs_diff: float | None = None,
    agreement: float | None = None,
) -> dict[str, Any]:
    """What a step measured, for the new version's ``lineage["figures"]``: the test data
    (name, rows), the original's and the result's accuracy on it, and the parity.

    The dashboard's version comparison shows these as they were measured at registration
    (the original's accuracy on the very same rows as the result's), rather than
    measuring again or guessing; ``None`` values are left out.
    """
    finite = max_abs_diff is not None and math.isfinite(max_abs_diff)
    found: dict[str, Any] = {
        "test_data": test.name if test is not None else None,
        "test_rows": len(test) if test is not None else None,
        "accuracy_before": accuracy_before,
        "accuracy_after": accuracy_after,
        "max_abs_diff": max_abs_diff if finite else None,
        "agreement": agreement,
    }
    return {k: v for k, v in found.items() if v is not None}


def _target_name(register: RegisterArg, source: Source, step: str) -> str | None:
    if register is False or (register is None and source.version is None):
        return None
    if register is True or register is None:
        if source.version is None:
            raise CompressionError(
                f"register=True needs a model from the registry to take its name; pass "
                f"register='a-name' to register the {step} result"
            )
        return source.version.name
    if isinstance(register, str):
        return register
    raise CompressionError(f"register must be a name, True, False or None, not {register!r}")


def publish(
    result: nn.Module,
    *,
    source: Source,
    register: RegisterArg,
    step: str,
    recipe: dict[str, Any],
    metrics: dict[str, float],
    onnx: bytes | None = None,
    data: Dataset | None = None,
    measured: dict[str, Any] | None = None,
    database: Database | None = None,
) -> str | None:
    """Register ``result`` (PyTorch, or ``onnx`` bytes) with its lineage; its reference.

    ``measured`` (from :func:`figures`) is stored as the lineage's ``figures``.
    """
    name = _target_name(register, source, step)
    if name is None:
        return None
    lineage: dict[str, Any] = {"derived_from": source.ref, "step": step, "recipe": recipe}
    if measured:
        lineage["figures"] = measured
    description = f"{step} of {source.ref}" if source.ref else f"{step} result"
    if onnx is None:
        model_spec(result)  # a zoo model, or a clear error before anything is written
        version = registry.register(
            result, name, metrics=metrics, dataset=data, description=description,
            lineage=lineage, database=database,
        )  # fmt: skip
        return version.ref
    classes = source.classes or (data.classes if data is not None else None)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        path.write_bytes(onnx)
        version = registry.register_onnx(
            path, name, metrics=metrics, description=description, classes=classes,
            preprocessing=source.preprocessing, lineage=lineage, database=database,
        )  # fmt: skip
    return version.ref
