"""``AutoMLResult``: the winning pipeline, the leaderboard and the feature report."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from lepton.data import Dataset
from lepton.errors import LabelError
from lepton.models import TabularPipeline
from lepton.tune._automl_data import METRICS, Table, as_matrix, metric_value
from lepton.tune._automl_leaderboard import Leaderboard
from lepton.tune._automl_select import FeatureReport

__all__ = ["AutoMLResult", "Best"]


@dataclass(frozen=True)
class Best:
    """The winning configuration: one trial, or a weighted ensemble of trials.

    Attributes:
        family: ``linear``, ``mlp``, ``hgb``, ``lightgbm``, or ``ensemble``.
        params: The trial's hyper-parameters (``features``: whether selection was
            applied); for an ensemble, each member's weight by ``"family #trial"``.
        score: Mean cross-validated metric (for an ensemble, of its averaged validation
            predictions: optimistic, as it was chosen on them).
        std: Its standard deviation over the folds.
        metric: The metric's name.
        members: ``{"family", "trial", "weight", "params"}`` of each member.
    """

    family: str
    params: dict[str, Any]
    score: float
    std: float
    metric: str
    members: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class AutoMLResult:
    """What :func:`lepton.tune.automl` returns.

    Attributes:
        model: The winning pipeline, an ``nn.Module`` (``TabularPipeline``): raw rows in,
            logits (classification) or values (regression) out.
        leaderboard: Every trial; ``leaderboard.table()`` prints as a rich table.
        best: The winning family, its parameters and cross-validated score.
        features: Kept features and what each selection method said.
        seconds: Wall time of the call (registering excluded).
        budget_s: The time budget it was given.
        task: ``"classification"`` or ``"regression"``.
        classes: The label of each output column (classification).
        notes: Anything left out or cut short (families not installed, a refit stopped
            at the budget, ...).
        version: The registered version, once :meth:`register` ran.
    """

    model: TabularPipeline
    leaderboard: Leaderboard
    best: Best
    features: FeatureReport
    seconds: float
    budget_s: float
    task: str
    classes: npt.NDArray[Any] | None
    table: Table = field(repr=False)
    lineage: Dataset = field(repr=False)
    notes: list[str] = field(default_factory=list)
    version: Any = None

    # -- predictions ---------------------------------------------------------------------
    def _rows(self, x: Any) -> torch.Tensor:
        names = self.table.input_names if hasattr(x, "columns") else None
        rows, _, _ = as_matrix(x, names=names, categories=self.table.categories)
        return torch.as_tensor(rows)

    def _outputs(self, x: Any) -> torch.Tensor:
        with torch.no_grad():
            out: torch.Tensor = self.model(self._rows(x))
        return out

    def predict_proba(self, x: Any) -> npt.NDArray[np.float64]:
        """Class probabilities ``(N, K)``, columns in the order of :attr:`classes`.

        Raises:
            LabelError: The task is regression.
        """
        if self.task != "classification":
            raise LabelError("predict_proba is for classification; use predict for regression")
        return self._outputs(x).softmax(1).numpy()  # type: ignore[no-any-return]

    def predict(self, x: Any) -> npt.NDArray[Any]:
        """Labels ``(N,)`` (as given in training) or predicted values ``(N,)``.

        Args:
            x: A ``Dataset``, an array/tensor ``(N, d)`` or a DataFrame with the
                training columns.
        """
        out = self._outputs(x)
        if self.task == "classification":
            assert self.classes is not None
            labels: npt.NDArray[Any] = self.table.classes[out.argmax(1).numpy()]  # type: ignore[index]
            return labels
        return out[:, 0].numpy()  # type: ignore[no-any-return]

    def score(self, x: Any, y: Any = None) -> float:
        """The search's metric on ``(x, y)`` (``y`` defaults to a Dataset's targets)."""
        if y is None:
            y = getattr(x, "targets", None)
            if y is None:
                raise LabelError("score needs labels: pass y, or a Dataset with targets")
        truth = np.asarray(y.numpy() if isinstance(y, torch.Tensor) else y)
        truth = truth.reshape(len(truth))
        metric = METRICS[self.best.metric]
        if self.task == "regression":
            return metric_value(metric, truth.astype(np.float64), self.predict(x))
        known = {label: i for i, label in enumerate(self.table.classes.tolist())}  # type: ignore[union-attr]
        unknown = [label for label in np.unique(truth).tolist() if label not in known]
        if unknown:
            raise LabelError(
                f"labels {unknown[:5]} were not seen in training; score only known ones"
            )
        codes = np.array([known[label] for label in truth.tolist()], dtype=np.int64)
        return metric_value(metric, codes, self.predict_proba(x))

    # -- registry ------------------------------------------------------------------------
    def register(self, name: str, *, description: str = "") -> Any:
        """Register the winning pipeline as the next version of ``name``.

        The pipeline is stored as safetensors plus its JSON architecture (no pickle);
        ``lp.load_model(version.ref)`` rebuilds it, and ``lepton serve`` serves it.

        Returns:
            The registry's ``ModelVersion``.

        Example:
            >>> version = result.register("wine-automl")  # doctest: +SKIP
            >>> lp.load_model(version.ref)  # doctest: +SKIP
        """
        from lepton.registry import register

        metrics = {f"cv_{self.best.metric}": self.best.score,
                   f"cv_{self.best.metric}_std": self.best.std}  # fmt: skip
        text = description or (
            f"lp.automl winner: {self.best.family} {self.best.params}; "
            f"{len(self.features.kept)} features kept of {len(self.features.votes)}."
        )
        self.version = register(self.model, name, metrics=metrics, dataset=self.lineage,
                                description=text)  # fmt: skip
        return self.version

    # -- reports -------------------------------------------------------------------------
    def summary(self) -> str:
        """A few lines: the winner, the budget, the features and the leaderboard."""
        b = self.best
        params = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                           for k, v in b.params.items())  # fmt: skip
        lines = [
            f"lp.automl {self.task}: winner {b.family} ({params})",
            f"  cross-validated {b.metric}: {b.score:.4f} ± {b.std:.4f}",
            f"  {len(self.leaderboard.rows)} trials in {self.seconds:.1f}s "
            f"(budget {self.budget_s:g}s)",
            f"  features: {len(self.features.kept)} kept, {len(self.features.dropped)} dropped"
            + (f" ({', '.join(self.features.dropped[:6])}"
               f"{', ...' if len(self.features.dropped) > 6 else ''})"
               if self.features.dropped else ""),
            *[f"  note: {n}" for n in self.notes],
            "",
            str(self.leaderboard),
        ]  # fmt: skip
        return "\n".join(lines)

    def __repr__(self) -> str:
        b = self.best
        return (
            f"AutoMLResult(best={b.family} {b.metric}={b.score:.4f}±{b.std:.4f}, "
            f"trials={len(self.leaderboard.rows)}, features={len(self.features.kept)}, "
            f"seconds={self.seconds:.1f}/{self.budget_s:g})"
        )
