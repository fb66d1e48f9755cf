"""Global feature importance: how much a metric drops when one feature is shuffled.

Built on scikit-learn's ``permutation_importance`` (Breiman, 2001), not Captum's
``FeaturePermutation``: scikit-learn's measures what a model card should show, the drop
of a *dataset metric* (accuracy, ROC AUC, R², any scorer name) over ``n_repeats``
shuffles of a column, with its spread; Captum's gives per-example output changes within
one batch, which is a local attribution (``explain(..., method="permutation")``). The
model is wrapped in a thin scikit-learn estimator that runs it in batches, in eval mode.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lepton._fs import atomic_write_bytes
from lepton.data import Dataset
from lepton.errors import ExplainError, LabelError
from lepton.explain._inputs import eval_mode, resolve_model
from lepton.explain._plot import bars_png

__all__ = ["FeatureImportance", "permutation_importance"]


@dataclass(frozen=True, eq=False)
class FeatureImportance:
    """Per-feature drop of a metric when that feature is shuffled (higher: more important).

    Attributes:
        names: One name per feature.
        mean: Mean drop of the metric over the repeats, per feature.
        std: Standard deviation of the drop, per feature.
        metric: The scikit-learn scorer name (``"accuracy"``, ``"roc_auc"``, ``"r2"``, ...).
        baseline_score: The metric with no feature shuffled.
        n_repeats: Shuffles per feature.

    Example:
        >>> importance = permutation_importance(model, test)  # doctest: +SKIP
        >>> importance.top(2)  # doctest: +SKIP
        [('worst radius', 0.061, 0.012), ('worst texture', 0.035, 0.009)]
    """

    names: list[str]
    mean: np.ndarray
    std: np.ndarray
    metric: str
    baseline_score: float
    n_repeats: int

    def top(self, k: int | None = None) -> list[tuple[str, float, float]]:
        """``(name, mean drop, std)`` of the ``k`` most important features (all if None)."""
        order = np.argsort(-self.mean, kind="stable")[: k if k is not None else len(self.names)]
        return [(self.names[i], float(self.mean[i]), float(self.std[i])) for i in order]

    def summary(self, k: int | None = 20) -> dict[str, Any]:
        """JSON-safe ``feature_importance`` for a model card or a manifest."""
        return {
            "method": "permutation",
            "metric": self.metric,
            "baseline_score": self.baseline_score,
            "n_repeats": self.n_repeats,
            "features": [
                {"name": name, "importance": mean, "std": std} for name, mean, std in self.top(k)
            ],
        }

    def to_markdown(self, k: int = 10) -> str:
        """A model card section: the ``k`` most important features as a table."""
        lines = [
            "## Feature importance",
            "",
            f"Drop of {self.metric} (from {self.baseline_score:.4f}) when one feature is "
            f"shuffled, mean ± std over {self.n_repeats} shuffles.",
            "",
            "| feature | importance | std |",
            "|---|---|---|",
        ]
        lines += [f"| {name} | {mean:.4f} | {std:.4f} |" for name, mean, std in self.top(k)]
        return "\n".join(lines) + "\n"

    def plot(self, path: str | Path | None = None, *, k: int = 20) -> bytes:
        """Horizontal bars of the ``k`` most important features with their std, as PNG."""
        rows = self.top(k)
        png = bars_png(
            [r[0] for r in rows],
            np.array([r[1] for r in rows]),
            f"permutation importance: drop of {self.metric}",
            errors=np.array([r[2] for r in rows]),
        )
        if path is not None:
            atomic_write_bytes(Path(path), png)
        return png


def permutation_importance(
    model: nn.Module | str,
    dataset: Dataset | tuple[Any, Any],
    metric: str | None = None,
    n_repeats: int = 5,
    seed: int = 0,
    *,
    batch_size: int = 1024,
    feature_names: list[str] | None = None,
) -> FeatureImportance:
    """Global importance of each feature of a model on a labelled dataset.

    Args:
        model: An ``nn.Module`` or a registry reference (``"name:1"``, ``"name@production"``).
        dataset: A :class:`~lepton.data.Dataset` with targets (a held-out split is best),
            or an ``(X, y)`` pair of arrays.
        metric: A scikit-learn scorer name; default ``"accuracy"`` for classification
            (integer targets), ``"r2"`` for regression.
        n_repeats: Shuffles of each feature.
        seed: Seeds the shuffles; the same seed gives the same result.
        batch_size: Rows per forward pass.
        feature_names: Names of the features (default: the Dataset's own).

    Returns:
        A :class:`FeatureImportance` (``.top(k)``, ``.summary()``, ``.to_markdown()``).

    Raises:
        LabelError: A dataset without targets.
        ExplainError: An unknown metric, or ``n_repeats < 1``.

    Example:
        >>> test = lp.data.load("breast-cancer", split="test")  # doctest: +SKIP
        >>> importance = permutation_importance(model, test, n_repeats=10)
        ...  # doctest: +SKIP
        >>> print(importance.to_markdown(k=5))  # doctest: +SKIP
    """
    from sklearn.inspection import permutation_importance as sk_permutation_importance
    from sklearn.metrics import get_scorer_names

    if isinstance(dataset, Dataset):
        if dataset.targets is None:
            raise LabelError(f"dataset {dataset.name!r} has no targets; importance needs labels")
        x, y = dataset.features, dataset.targets
        names = feature_names or dataset.feature_names
    else:
        x, y = (torch.as_tensor(np.asarray(part)) for part in dataset)
        names = feature_names
    classification = not y.is_floating_point()
    metric = metric or ("accuracy" if classification else "r2")
    if metric not in get_scorer_names():
        raise ExplainError(
            f"unknown metric {metric!r}; use a scikit-learn scorer name such as 'accuracy', "
            f"'roc_auc', 'f1_macro', 'r2' or 'neg_mean_squared_error'"
        )
    if n_repeats < 1:
        raise ExplainError(f"n_repeats must be >= 1, got {n_repeats}")
    flat = x.reshape(len(x), -1).float().numpy()
    if names is not None and len(names) != flat.shape[1]:
        raise ExplainError(f"{len(names)} feature names for {flat.shape[1]} features")
    net = resolve_model(model)
    with eval_mode(net):
        estimator = _estimator(net, tuple(x.shape[1:]), classification, batch_size)
        if classification:
            estimator.classes_ = np.arange(_num_classes(net, flat[:1], tuple(x.shape[1:])))
        result = sk_permutation_importance(
            estimator, flat, y.numpy(), scoring=metric, n_repeats=n_repeats, random_state=seed
        )
        baseline = float(estimator.score_with(metric, flat, y.numpy()))
    return FeatureImportance(
        names=[str(n) for n in names]
        if names is not None
        else [f"feature {i}" for i in range(flat.shape[1])],
        mean=np.asarray(result.importances_mean, dtype=np.float64),
        std=np.asarray(result.importances_std, dtype=np.float64),
        metric=metric,
        baseline_score=baseline,
        n_repeats=n_repeats,
    )


def _run(model: nn.Module, flat: np.ndarray, shape: tuple[int, ...], batch: int) -> np.ndarray:
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    outs = []
    with torch.inference_mode():
        for start in range(0, len(flat), batch):
            xb = torch.from_numpy(np.ascontiguousarray(flat[start : start + batch]))
            out = model(xb.reshape(len(xb), *shape).to(device))
            outs.append(out.reshape(len(xb), -1).float().cpu())
    return torch.cat(outs).numpy()


def _num_classes(model: nn.Module, row: np.ndarray, shape: tuple[int, ...]) -> int:
    return int(_run(model, row, shape, 1).shape[1])


def _estimator(model: nn.Module, shape: tuple[int, ...], classification: bool, batch: int) -> Any:
    """A fitted scikit-learn estimator that runs ``model`` (scikit-learn is imported late)."""
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
    from sklearn.metrics import get_scorer

    class _Torch(BaseEstimator):  # type: ignore[misc]
        def __init__(self, model: nn.Module | None = None) -> None:
            self.model = model

        def fit(self, x: Any, y: Any = None) -> _Torch:
            return self  # already trained: scikit-learn only scores it

        def _outputs(self, x: Any) -> np.ndarray:
            assert self.model is not None
            return _run(self.model, np.asarray(x, dtype=np.float32), shape, batch)

        def score_with(self, metric: str, x: Any, y: Any) -> float:
            return float(get_scorer(metric)(self, x, y))

    class _Classifier(ClassifierMixin, _Torch):  # type: ignore[misc]
        def predict(self, x: Any) -> np.ndarray:
            labels: np.ndarray = np.asarray(self._outputs(x)).argmax(axis=1)
            return labels

        def predict_proba(self, x: Any) -> np.ndarray:
            logits = torch.from_numpy(self._outputs(x))
            return logits.softmax(dim=1).numpy()

    class _Regressor(RegressorMixin, _Torch):  # type: ignore[misc]
        def predict(self, x: Any) -> np.ndarray:
            out = self._outputs(x)
            return out[:, 0] if out.shape[1] == 1 else out

    return (_Classifier if classification else _Regressor)(model)
