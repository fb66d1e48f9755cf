"""Classic linear estimators with a scikit-learn-like API, solved in float64 with torch.

Both estimators accept numpy arrays, torch tensors, or any object with ``.features`` and
``.targets`` (such as ``lepton.data.Dataset``); store as tensors only (``to_state``), so a
registry can write them as safetensors; and expose an equivalent ``nn.Linear``
(``.module``) for export and serving.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from lepton.errors import (
    DataError,
    EmptyDatasetError,
    LabelError,
    NotFittedError,
    ShapeError,
    UnknownModelError,
)

__all__ = ["LinearRegression"]

_F64 = torch.float64


def as_numpy(a: Any) -> npt.NDArray[Any]:
    """Any array-like (a tensor, a list, a pandas DataFrame or Series, ...) as a NumPy
    array torch can share: a read-only view (what pandas gives) is copied."""
    if isinstance(a, torch.Tensor):
        return a.detach().cpu().numpy()
    array = np.asarray(a)
    return array if array.flags.writeable else array.copy()


def features(X: Any, owner: str, n_features: int | None = None) -> torch.Tensor:
    """Return ``X`` as a finite ``(N, d)`` float64 tensor; images ``(N, ...)`` are flattened."""
    X = getattr(X, "features", X)
    try:
        x = torch.as_tensor(as_numpy(X), dtype=_F64)
    except (TypeError, ValueError) as exc:
        columns = getattr(X, "columns", None)
        kinds = getattr(X, "dtypes", None)
        if columns is not None and kinds is not None:  # a table, e.g. a pandas DataFrame
            text = [str(c) for c, k in zip(columns, kinds, strict=False) if k.kind not in "biuf"]
            if text:
                raise ShapeError(
                    f"{owner} needs numeric features; column(s) {', '.join(text)} are not "
                    "numbers: encode them first (one-hot or ordinal), or drop them"
                ) from None
        raise ShapeError(f"{owner} needs numeric features shaped (N, d): {exc}.") from exc
    if x.ndim < 2:
        raise ShapeError(
            f"{owner} expects features shaped (N, d), got {tuple(x.shape)}; use "
            "X.reshape(-1, 1) for one feature or X.reshape(1, -1) for one sample."
        )
    x = x.flatten(1)  # (N, d)
    if x.numel() == 0:
        raise EmptyDatasetError(
            f"{owner} got an empty feature matrix {tuple(x.shape)}; pass at least one row "
            "and one column."
        )
    if not torch.isfinite(x).all():
        bad = int((~torch.isfinite(x)).any(dim=1).sum())
        raise DataError(
            f"{owner} got NaN or infinite values in {bad} row(s) of X; drop or impute them "
            "first, e.g. with lepton.data.clean()."
        )
    if n_features is not None and x.shape[1] != n_features:
        raise ShapeError(
            f"{owner} was fitted on {n_features} features but X has {x.shape[1]}; pass "
            "the same columns, in the same order, as during fit."
        )
    return x


def features_targets(X: Any, y: Any, owner: str) -> tuple[torch.Tensor, npt.NDArray[Any]]:
    if y is None:
        y = getattr(X, "targets", None)
    if y is None:
        raise LabelError(
            f"{owner}.fit needs targets: call .fit(X, y) or pass a dataset with targets."
        )
    x = features(X, owner)
    targets = as_numpy(y)
    if targets.ndim == 0 or targets.shape[0] != x.shape[0]:
        raise ShapeError(
            f"{owner} got {x.shape[0]} rows in X but y has shape {targets.shape}; pass "
            "one target per row."
        )
    return x, targets


class LinearEstimator:
    """Shared state and helpers: a fitted weight ``(k, d)`` and bias ``(k,)`` in float64."""

    _weight: torch.Tensor | None = None
    _bias: torch.Tensor | None = None

    def _fitted(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._weight is None or self._bias is None:
            raise NotFittedError(
                f"This {type(self).__name__} is not fitted yet; call .fit(X, y) first."
            )
        return self._weight, self._bias

    def _linear(self, X: Any) -> torch.Tensor:
        weight, bias = self._fitted()
        x = features(X, type(self).__name__, weight.shape[1])  # (N, d)
        return x @ weight.T + bias  # (N, k)

    @property
    def module(self) -> nn.Linear:
        """An equivalent float64 ``nn.Linear`` (call ``.float()`` to serve in float32)."""
        weight, bias = self._fitted()
        layer = nn.Linear(weight.shape[1], weight.shape[0], dtype=_F64)
        with torch.no_grad():
            layer.weight.copy_(weight)
            layer.bias.copy_(bias)
        return layer.requires_grad_(False)


class LinearRegression(LinearEstimator):
    """Ordinary least squares, or ridge regression when ``alpha > 0``, in closed form.

    Matches ``sklearn.linear_model.LinearRegression`` (``alpha == 0``) and ``Ridge(alpha)``:
    minimises ``||y - X w - b||² + alpha * ||w||²`` with the intercept unpenalised.

    Args:
        fit_intercept: Learn a bias term (centers X and y before solving).
        alpha: L2 penalty strength, >= 0.

    Example:
        >>> model = LinearRegression().fit(X, y)
        >>> model.predict(X[:3]), model.score(X, y)
    """

    def __init__(self, fit_intercept: bool = True, alpha: float = 0.0) -> None:
        if not isinstance(alpha, (int, float)) or isinstance(alpha, bool) or not alpha >= 0:
            raise UnknownModelError(
                f"alpha must be a float >= 0, got {alpha!r}; e.g. LinearRegression(alpha=1.0)."
            )
        self.fit_intercept = bool(fit_intercept)
        self.alpha = float(alpha)
        self._single_output = True

    def get_params(self) -> dict[str, Any]:
        """Return the constructor arguments."""
        return {"fit_intercept": self.fit_intercept, "alpha": self.alpha}

    def fit(self, X: Any, y: Any = None) -> LinearRegression:
        """Fit to features ``X`` ``(N, d)`` and targets ``y`` ``(N,)`` or ``(N, k)``."""
        x, targets = features_targets(X, y, "LinearRegression")
        t = torch.as_tensor(targets, dtype=_F64)
        if not torch.isfinite(t).all():
            raise DataError("LinearRegression got NaN or infinite targets; clean y first.")
        self._single_output = t.ndim == 1
        t = t.reshape(t.shape[0], -1)  # (N, k)
        x_mean = x.mean(0) if self.fit_intercept else x.new_zeros(x.shape[1])  # (d,)
        t_mean = t.mean(0) if self.fit_intercept else t.new_zeros(t.shape[1])  # (k,)
        xc, tc = x - x_mean, t - t_mean
        if self.alpha > 0:
            gram = xc.T @ xc + self.alpha * torch.eye(x.shape[1], dtype=_F64)  # (d, d)
            coef = torch.linalg.solve(gram, xc.T @ tc)  # (d, k)
        else:  # gelsd gives the minimum-norm solution, like scipy, for rank-deficient X
            driver = "gelsd" if x.device.type == "cpu" else None
            coef = torch.linalg.lstsq(xc, tc, driver=driver).solution  # (d, k)
        self._weight = coef.T.contiguous()  # (k, d)
        self._bias = t_mean - x_mean @ coef  # (k,)
        return self

    def predict(self, X: Any) -> npt.NDArray[np.float64]:
        """Predict ``(N,)`` (or ``(N, k)`` for multi-output targets)."""
        out = self._linear(X).numpy()
        return out[:, 0] if self._single_output else out

    def score(self, X: Any, y: Any = None) -> float:
        """Coefficient of determination R², averaged uniformly over outputs."""
        x, targets = features_targets(X, y, "LinearRegression")
        t = torch.as_tensor(targets, dtype=_F64).reshape(x.shape[0], -1)  # (N, k)
        pred = self._linear(x)  # (N, k)
        ss_res = ((t - pred) ** 2).sum(0)
        ss_tot = ((t - t.mean(0)) ** 2).sum(0)
        r2 = torch.where(ss_tot > 0, 1 - ss_res / ss_tot.clamp(min=1e-300), (ss_res == 0).to(_F64))
        return float(r2.mean())

    @property
    def coef_(self) -> npt.NDArray[np.float64]:
        """Coefficients, ``(d,)`` for one target or ``(k, d)`` for ``k`` targets."""
        weight, _ = self._fitted()
        return weight[0].numpy() if self._single_output else weight.numpy()

    @property
    def intercept_(self) -> npt.NDArray[np.float64]:
        """Intercept, a scalar array for one target or ``(k,)`` for ``k`` targets."""
        _, bias = self._fitted()
        return bias[0].numpy() if self._single_output else bias.numpy()

    def to_state(self) -> dict[str, torch.Tensor]:
        """Return the fitted model as tensors only (safetensors-ready, no pickle)."""
        weight, bias = self._fitted()
        return {
            "weight": weight.clone(),
            "bias": bias.clone(),
            "fit_intercept": torch.tensor(self.fit_intercept),
            "alpha": torch.tensor(self.alpha, dtype=_F64),
            "single_output": torch.tensor(self._single_output),
        }

    @classmethod
    def from_state(cls, state: dict[str, torch.Tensor]) -> LinearRegression:
        """Rebuild a fitted model from :meth:`to_state`'s tensors."""
        model = cls(fit_intercept=bool(state["fit_intercept"]), alpha=float(state["alpha"]))
        model._weight = state["weight"].to(_F64).clone()
        model._bias = state["bias"].to(_F64).clone()
        model._single_output = bool(state["single_output"])
        return model

    def __repr__(self) -> str:
        return f"LinearRegression(fit_intercept={self.fit_intercept}, alpha={self.alpha})"
