"""Serving a registered model version: ``lepton deploy mnist-convnet@production``.

The generated ``POST /predict`` takes one input per request (JSON ``{"inputs": ...}``
in the training data's raw feature space, or an image: base64 in ``{"image": ...}``, a
``multipart/form-data`` upload or a raw ``image/png`` body), applies the version's
recorded preprocessing, and answers a :class:`~lepton.Prediction`. Requests are
dynamically batched; one bad input fails alone, never its batch: each input is checked
before it joins one (:meth:`ModelService.check_input`), and inputs of different shapes
are never stacked together.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Any

import torch
from pydantic import BaseModel, ConfigDict, model_validator

from lepton.errors import RequestError, ShapeError
from lepton.serve._explain_route import ExplainAnswer, Explainer, ExplainRequest
from lepton.serve._handler import handler
from lepton.serve._service import Service
from lepton.serve._types import Image, Prediction, Tensor

if TYPE_CHECKING:
    from lepton.storage import Database

__all__ = ["ModelInput", "ModelService"]

log = logging.getLogger("lepton.serve")
_MAX_SHAPES = 64  # input shapes remembered as working, for a model without a recorded one


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
    """A registered version (PyTorch or ONNX) behind ``/predict``, ``/explain`` and ``/info``."""

    def __init__(self, ref: str, *, database: Database | None = None) -> None:
        self.ref = ref
        self.database = database  # the default one; the platform passes its own

    def setup(self) -> None:
        from lepton.registry import load_model, resolve

        version = resolve(self.ref, database=self.database)
        self.version = version
        self.model = load_model(version.ref, database=self.database)
        manifest = version.manifest
        self.shape = _sample_shape(manifest.get("input_schema", {}).get("shape"))
        self.steps: list[dict[str, Any]] = list(manifest.get("preprocessing") or [])
        output = manifest.get("output_schema", {})
        self.classifier = output.get("kind") == "logits"
        self.classes: list[Any] | None = output.get("classes")
        self.good_shapes: set[tuple[int, ...]] = set()
        names = manifest.get("input_schema", {}).get("feature_names")
        self.explainer = Explainer(self.model, self.steps, self.classes, names)

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

    def check_input(self, item: ModelInput) -> None:
        """Refuse one malformed input before it joins a batch.

        Raises:
            RequestError: An image for a model that does not take images, or values
                that are not finite numbers (400).
            ShapeError: An empty input, or one that does not fit the recorded shape (422).
        """
        if item.image is not None:
            if self.shape is None or len(self.shape) != 3:
                raise RequestError(
                    f"{self.version.ref} takes {self.shape or 'tensor'} inputs, not images; "
                    f'send {{"inputs": [...]}}'
                )
            return
        assert item.inputs is not None
        if item.inputs.numel() == 0:
            raise ShapeError('"inputs" is empty; send the numbers of one input')
        if not bool(torch.isfinite(item.inputs).all()):
            raise RequestError('"inputs" holds NaN or infinity; send finite numbers')
        self._tensor(item)  # the recorded shape, when there is one

    @handler(timeout_s=120)
    def explain(self, request: ExplainRequest) -> ExplainAnswer:
        """Attributions of one input (``/predict``'s body plus ``method``, ``target``, ``plot``)."""
        x = self._tensor(ModelInput.model_construct(inputs=request.inputs, image=request.image))
        return self.explainer.explain(x, request, self._predict(x.unsqueeze(0))[0])

    @handler(batch_size=32, max_wait_ms=5, check="check_input")
    def predict(self, item: list[ModelInput]) -> list[Prediction]:
        """Predict one input (batched with others on the server)."""
        results: list[Prediction | Exception | None] = [None] * len(item)
        groups: dict[tuple[int, ...], list[tuple[int, torch.Tensor]]] = {}
        for i, one in enumerate(item):
            try:
                x = self._tensor(one)
            except (RequestError, ShapeError) as exc:
                results[i] = exc
                continue
            groups.setdefault(tuple(x.shape), []).append((i, x))
        # Inputs of different shapes cannot be stacked: each shape is a batch of its own,
        # so an input of a wrong shape (for a model without a recorded one) fails alone.
        for shape, members in groups.items():
            try:
                predictions = self._predict(torch.stack([x for _, x in members]))
            except Exception as exc:
                if self.shape is not None or shape in self.good_shapes:
                    raise  # not the shape: the batcher isolates the input that fails
                log.warning("%s failed on inputs of shape %s: %r", self.version.ref,
                            list(shape), exc)  # fmt: skip
                error = ShapeError(
                    f"{self.version.ref} cannot take inputs of shape {list(shape)} "
                    f"({type(exc).__name__}); send inputs shaped like its training data"
                )
                for i, _ in members:
                    results[i] = error
                continue
            if len(self.good_shapes) < _MAX_SHAPES:
                self.good_shapes.add(shape)
            for (i, _), prediction in zip(members, predictions, strict=True):
                results[i] = prediction
        # An exception in place of a result fails only that request (see Batcher).
        return results  # type: ignore[return-value]

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
