"""``POST /explain`` of a deployed version: why the model answers what ``/predict`` answers.

The body is ``/predict``'s (``{"inputs": ...}``, ``{"image": ...}``, an image upload) plus
``method`` (one of :data:`lepton.explain.METHODS`), ``target`` (a class index or name;
default the predicted class) and ``plot`` (add a base64 PNG). Attributions are in the
space the client sent: the version's recorded preprocessing runs inside the explained
function, so they answer "which of *my* values mattered".

Captum attaches hooks to a model's layers while it explains (Grad-CAM, token IG); they
would fire in a ``/predict`` batch running at the same time on another thread, so the
explainer works on its own copy of the module, made on the first request.
"""

from __future__ import annotations

import base64
import copy
import threading
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, field_validator, model_validator
from torch import nn

from lepton.errors import ExplainError, MissingExtraError, RequestError, ServingError
from lepton.serve._types import Image, Prediction, Tensor

__all__ = ["ExplainAnswer", "ExplainRequest", "Explainer"]


class ExplainRequest(BaseModel):
    """One input to explain (a tensor or an image, as for ``/predict``) and how."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    inputs: Tensor | None = None
    image: Image | None = None
    method: str = "integrated_gradients"
    target: int | str | None = None
    plot: bool = False

    @field_validator("method")
    @classmethod
    def _known(cls, method: str) -> str:
        from lepton.explain import METHODS

        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; use one of {', '.join(METHODS)}")
        return method

    @model_validator(mode="after")
    def _one(self) -> ExplainRequest:
        if (self.inputs is None) == (self.image is None):
            raise ValueError('send exactly one of "inputs" (a tensor) or "image"')
        return self


class ExplainAnswer(BaseModel):
    """Attributions of one input, with the shape the service reads it in."""

    method: str
    target: int | None
    prediction: Prediction
    attributions: list[Any]
    convergence_delta: float | None = None
    png: str | None = None


class _Preprocessed(nn.Module):
    """The model after the version's recorded preprocessing (both differentiable)."""

    def __init__(self, model: nn.Module, steps: list[dict[str, Any]]) -> None:
        super().__init__()
        self.model = model
        self.steps = steps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from lepton.data import replay_preprocessing

        return self.model(replay_preprocessing(x, self.steps)[0])  # type: ignore[no-any-return]


class Explainer:
    """Explains one input at a time for a served version.

    Args:
        model: The served module (never changed, never hooked).
        steps: The version's recorded preprocessing.
        classes: Class names, so a target may be given by name.
        feature_names: Names of tabular features, when recorded.
    """

    def __init__(
        self,
        model: nn.Module,
        steps: list[dict[str, Any]],
        classes: list[Any] | None,
        feature_names: list[str] | None = None,
    ) -> None:
        self._model = model
        self._steps = steps
        self._classes = [str(c) for c in classes] if classes else None
        self._feature_names = feature_names
        self._own: nn.Module | None = None
        self._lock = threading.Lock()

    def _module(self) -> nn.Module:
        with self._lock:
            if self._own is None:
                # a model without parameters (ONNX) has no layers to hook: share it
                own = self._model
                if next(self._model.parameters(), None) is not None:
                    own = copy.deepcopy(self._model).eval()
                self._own = _Preprocessed(own, self._steps) if self._steps else own
            return self._own

    def _target(self, target: int | str | None) -> int | None:
        if target is None or isinstance(target, int):
            return target
        if self._classes and target in self._classes:
            return self._classes.index(target)
        if target.strip().lstrip("-").isdigit():
            return int(target)
        names = ", ".join(self._classes or []) or "class indices"
        raise RequestError(f"unknown target class {target!r}; use one of: {names}")

    def explain(
        self, x: torch.Tensor, request: ExplainRequest, prediction: Prediction
    ) -> ExplainAnswer:
        """Attributions of ``x`` (one input, as the service shaped it).

        Raises:
            RequestError: A method, target or option the model cannot be explained with (400).
            ShapeError: An input the model cannot take (422).
        """
        from lepton.explain import explain

        try:
            result = explain(
                self._module(), x.unsqueeze(0), method=request.method,
                target=self._target(request.target), feature_names=self._feature_names,
            )  # fmt: skip
        except MissingExtraError as exc:
            raise ServingError(exc.message, status=501, code=exc.code) from None
        except ExplainError as exc:
            raise RequestError(exc.message, code=exc.code) from None
        png = base64.b64encode(result.plot()).decode("ascii") if request.plot else None
        delta = result.convergence_delta
        return ExplainAnswer(
            method=result.method,
            target=result.targets[0] if result.targets is not None else None,
            prediction=prediction,
            attributions=result.attributions[0].tolist(),
            convergence_delta=float(delta[0]) if delta is not None else None,
            png=png,
        )
