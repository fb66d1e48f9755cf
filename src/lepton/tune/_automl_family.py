"""The contract of a model family ``lp.automl`` searches, and what every fit receives.

A :class:`Family` knows its Optuna search space and a first, default configuration; how
long a configuration takes (``work``, in units whose seconds the search learns, helped
by ``probe`` fits of 1x and 3x a small size); how to fit under a deadline and to predict
(class probabilities or values); how to ``shrink`` a configuration to fit the time left;
how much it can fit (``complexity``, for the one-standard-error rule); and how its fitted
model becomes the head of a ``TabularPipeline`` (a zoo module, stored as tensors). The
families themselves are in ``_automl_families``.
"""

from __future__ import annotations

import abc
import math
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
import numpy.typing as npt
import torch

__all__ = ["Context", "Family", "Head", "Matrix", "tiny_fit"]

Matrix = npt.NDArray[np.float64]
Task = Literal["classification", "regression"]


@dataclass(frozen=True)
class Context:
    """What every fit needs to know besides its parameters."""

    task: Task
    num_classes: int | None
    seed: int
    n_jobs: int

    @property
    def classify(self) -> bool:
        return self.task == "classification"

    @property
    def outputs(self) -> int:
        """Trees per boosting iteration: one per class beyond binary, else one."""
        return self.num_classes if self.num_classes and self.num_classes > 2 else 1


@dataclass
class Head:
    """A fitted model as a pipeline head: its zoo spec and weights, and the target scale."""

    spec: dict[str, Any]
    state: dict[str, torch.Tensor]
    target: tuple[float, float] = (0.0, 1.0)


class Family(abc.ABC):
    """One model family: ``name`` and the abstract methods are required; ``can_start``,
    ``warm_up``, ``probe`` and ``shrink`` have defaults for families that need none."""

    name: ClassVar[str]

    def can_start(self, seconds: float) -> bool:
        """Whether its first trial is worth starting with ``seconds`` of search left."""
        return True

    def warm_up(self) -> None:
        """Pay one-time costs before any fit is timed: imports, first-call set-up (torch
        imports its compiler stack, seconds, when the first optimizer is built)."""
        tiny_fit(self)

    def probe(self, params: dict[str, Any], size: int) -> dict[str, Any] | None:
        """A cheap variant of ``params`` (``size`` iterations or epochs) whose timing
        predicts theirs, or None when fits are too quick to need it."""
        return None

    def shrink(self, params: dict[str, Any], share: float) -> dict[str, Any]:
        """``params`` with their iterations or epochs scaled by ``share`` (< 1)."""
        return params

    @abc.abstractmethod
    def suggest(self, trial: Any, rows: int, ctx: Context) -> dict[str, Any]:
        """Sample a configuration from ``trial`` (Optuna)."""
        ...

    @abc.abstractmethod
    def complexity(self, params: dict[str, Any]) -> float:
        """How much a configuration can fit (greater: more), to prefer simpler ones."""
        ...

    @abc.abstractmethod
    def defaults(self, rows: int, ctx: Context) -> dict[str, Any]:
        """A sound first configuration, tried before the sampler takes over."""
        ...

    @abc.abstractmethod
    def work(self, params: dict[str, Any], rows: int, width: int, ctx: Context) -> float:
        """Relative cost of one fit (seconds per unit are learned as trials run)."""
        ...

    @abc.abstractmethod
    def fit(
        self, params: dict[str, Any], z: Matrix, y: npt.NDArray[Any], ctx: Context, deadline: float
    ) -> tuple[Any, bool]:
        """Fit; return the model and whether ``deadline`` cut the fit short."""
        ...

    @abc.abstractmethod
    def predict(self, model: Any, z: Matrix, ctx: Context) -> Matrix:
        """Class probabilities ``(N, K)`` or values ``(N,)``."""
        ...

    @abc.abstractmethod
    def head(self, model: Any, width: int, ctx: Context) -> Head:
        """The fitted model as a zoo module over ``width`` features."""
        ...


def tiny_fit(family: Family) -> None:
    """Fit the family's probe on 40 rows: pays imports and first-call set-up."""
    ctx = Context("classification", 2, 0, 1)
    rng = np.random.default_rng(0)
    z, y = rng.normal(size=(40, 3)), np.arange(40) % 2
    params = family.defaults(40, ctx)
    family.fit(family.probe(params, 1) or params, z, y, ctx, math.inf)
