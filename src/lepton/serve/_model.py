"""Serving a registered model version: ``lepton deploy mnist-convnet@production``.

The generated ``POST /predict`` takes one input per request (JSON ``{"inputs": ...}``
in the training data's raw feature space, or an image: base64 in ``{"image": ...}``, a
``multipart/form-data`` upload or a raw ``image/png`` body), applies the version's
recorded preprocessing, and answers a :class:`~lepton.Prediction`. Requests are
dynamically batched; one bad input fails alone, never its batch.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, model_validator

from lepton.errors import RequestError, ShapeError
from lepton.serve._handler import handler
from lepton.serve._service import Service
from lepton.serve._types import Image, Prediction, Tensor

__all__ = ["ModelInput", "ModelService"]


class ModelInput(BaseModel):
    """One input of a deployed model: a tensor or an image (exactly one)."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    inputs: Tensor | None = None
    image: Image | None = None

    @model_validator(mode="after")
    def _one(self) -> ModelInput:
        if (self.inputs is None) == (self.image is None):
            raise ValueError('send exactly one of "inputs" (a tensor) or "image"')
        return self


def _sample_shape(shape: list[Any] | None) -> list[int] | None:
    # ONNX graphs name their batch dimension ("batch", "n"); drop it. Other symbolic
    # dimensions leave the shape unchecked.
    if not shape:
        return None
    if not isinstance(shape[0], int) or (len(shape) > 1 and shape[0] in (-1, 0)):
        shape = shape[1:]
    return [int(d) for d in shape] if all(isinstance(d, int) and d > 0 for d in shape) else None


class ModelService(Service):
    """A registered version (PyTorch or ONNX) behind ``/predict`` and ``/info``."""

    def __init__(self, ref: str) -> None:
        self.ref = ref

    def setup(self) -> None:
        from lepton.registry import load_model, resolve

        version = resolve(self.ref)
        self.version = version
        self.model = load_model(version.ref)
        manifest = version.manifest
        self.shape = _sample_shape(manifest.get("input_schema", {}).get("shape"))
        self.steps: list[dict[str, Any]] = list(manifest.get("preprocessing") or [])
        output = manifest.get("output_schema", {})
        self.classifier = output.get("kind") == "logits"
        self.classes: list[Any] | None = output.get("classes")

    @handler(method="GET")
    def info(self) -> dict[str, Any]:
        """The served version: name, number, input and output schema, metrics."""
        m = self.version.manifest
        return {
            "model": self.version.name,
            "version": self.version.version,
            "ref": self.version.ref,
            "kind": m.get("kind", "pytorch"),
            "input_schema": m.get("input_schema"),
            "output_schema": m.get("output_schema"),
            "preprocessing": [s.get("op") for s in self.steps],
            "metrics": m.get("metrics"),
        }

    def _tensor(self, item: ModelInput) -> torch.Tensor:
        shape = self.shape
        if item.image is not None:
            if shape is None or len(shape) != 3:
                raise RequestError(
                    f"{self.version.ref} takes {shape or 'tensor'} inputs, not images; send "
                    f'{{"inputs": [...]}}'
                )
            return item.image.to_tensor(channels=shape[0], size=(shape[1], shape[2]))
        assert item.inputs is not None
        x = item.inputs.float()
        if shape is None:
            return x
        if list(x.shape) != list(shape):
            if x.numel() != math.prod(shape):
                raise ShapeError(
                    f"{self.version.ref} takes inputs of shape {shape} ({math.prod(shape)} "
                    f"numbers); got shape {list(x.shape)}"
                )
            x = x.reshape(shape)
        return x

    @handler(batch_size=32, max_wait_ms=5)
    def predict(self, item: list[ModelInput]) -> list[Prediction]:
        """Predict one input (batched with others on the server)."""
        tensors: list[torch.Tensor | Exception] = []
        for one in item:
            try:
                tensors.append(self._tensor(one))
            except (RequestError, ShapeError) as exc:
                tensors.append(exc)
        good = [t for t in tensors if isinstance(t, torch.Tensor)]
        predictions = iter(self._predict(torch.stack(good)) if good else [])
        # An exception in place of a result fails only that request (see Batcher).
        return [t if isinstance(t, Exception) else next(predictions) for t in tensors]  # type: ignore[misc]

    def _predict(self, x: torch.Tensor) -> list[Prediction]:
        from lepton.data import replay_preprocessing

        x, _ = replay_preprocessing(x, self.steps)
        with torch.inference_mode():
            out = self.model(x)
        if not self.classifier:
            return [Prediction(values=row.reshape(-1).tolist()) for row in out]
        probs = out.float().softmax(dim=1)
        scores, labels = probs.max(dim=1)
        names = self.classes
        return [
            Prediction(
                label=names[i] if names and i < len(names) else i,
                score=score,
                probabilities=p,
            )
            for i, score, p in zip(labels.tolist(), scores.tolist(), probs.tolist(), strict=False)
        ]
