"""L2-regularised logistic regression solved with L-BFGS in float64 (scikit-learn's objective)."""

from __future__ import annotations

import json
import warnings
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F

from lepton.errors import LabelError, UnknownModelError
from lepton.models._linear import LinearEstimator, as_numpy, features_targets

__all__ = ["LogisticRegression"]

_F64 = torch.float64


def _encode_labels(targets: npt.NDArray[Any]) -> tuple[npt.NDArray[Any], npt.NDArray[np.int64]]:
    """Return the sorted distinct labels and each row's index into them."""
    if targets.ndim == 2 and targets.shape[1] == 1:
        targets = targets[:, 0]
    if targets.ndim != 1:
        raise LabelError(
            f"LogisticRegression needs one label per row, shaped (N,), got {targets.shape}; "
            "for one-hot labels pass y.argmax(1)."
        )
    if targets.dtype.kind == "f" and not np.all(np.isfinite(targets) & (targets % 1 == 0)):
        raise LabelError(
            "LogisticRegression got continuous or NaN labels; classification needs class "
            "labels (ints or strings). Use LinearRegression for continuous targets."
        )
    try:
        classes, index = np.unique(targets, return_inverse=True)
    except TypeError as exc:
        raise LabelError(f"Labels must all be of one type (ints or strings): {exc}.") from exc
    if len(classes) < 2:
        raise LabelError(
            f"LogisticRegression needs at least 2 classes in y, got only {classes.tolist()}; "
            "check the labels or the split that produced them."
        )
    return classes, index.reshape(-1).astype(np.int64)


class LogisticRegression(LinearEstimator):
    """Logistic regression matching ``sklearn.linear_model.LogisticRegression(C=C)``.

    Minimises ``sum_i log_loss_i + ||W||² / (2 C)`` (intercept unpenalised) with
    ``torch.optim.LBFGS`` (strong Wolfe line search) in float64: the binary logistic loss
    for 2 classes and the multinomial (softmax) loss for more.

    Args:
        C: Inverse regularisation strength, > 0.
        max_iter: Most L-BFGS iterations.
        tol: Stop when every gradient entry of the (sample-averaged) objective is <= tol.
        fit_intercept: Learn a bias per class.

    Example:
        >>> clf = LogisticRegression(C=1.0).fit(X, y)
        >>> clf.predict_proba(X[:2]), clf.classes_
    """

    def __init__(
        self, C: float = 1.0, max_iter: int = 200, tol: float = 1e-6, fit_intercept: bool = True
    ) -> None:
        example = "LogisticRegression(C=1.0, max_iter=200, tol=1e-6)"
        if isinstance(C, bool) or not isinstance(C, (int, float)) or not C > 0:
            raise UnknownModelError(f"C must be a float > 0, got {C!r}; e.g. {example}.")
        if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
            raise UnknownModelError(f"max_iter must be an int >= 1, got {max_iter!r}; {example}.")
        if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not tol > 0:
            raise UnknownModelError(f"tol must be a float > 0, got {tol!r}; e.g. {example}.")
        self.C = float(C)
        self.max_iter = max_iter
        self.tol = float(tol)
        self.fit_intercept = bool(fit_intercept)
        self.n_iter_ = 0
        self._classes: npt.NDArray[Any] | None = None

    def get_params(self) -> dict[str, Any]:
        """Return the constructor arguments."""
        return {"C": self.C, "max_iter": self.max_iter, "tol": self.tol,
                "fit_intercept": self.fit_intercept}  # fmt: skip

    def fit(self, X: Any, y: Any = None) -> LogisticRegression:
        """Fit to features ``X`` ``(N, d)`` and class labels ``y`` ``(N,)`` (ints or strings)."""
        x, targets = features_targets(X, y, "LogisticRegression")
        classes, index = _encode_labels(targets)
        n, d = x.shape
        k = 1 if len(classes) == 2 else len(classes)
        weight = torch.zeros(k, d, dtype=_F64, requires_grad=True)
        bias = torch.zeros(k, dtype=_F64, requires_grad=self.fit_intercept)
        labels = torch.as_tensor(index)
        # Averaging the loss (as scikit-learn does) keeps `tol` independent of N.
        penalty = 1.0 / (2.0 * self.C * n)

        def objective() -> torch.Tensor:
            logits = x @ weight.T + bias  # (N, k)
            if k == 1:
                loss = F.binary_cross_entropy_with_logits(logits[:, 0], labels.to(_F64))
            else:
                loss = F.cross_entropy(logits, labels)
            return loss + penalty * (weight**2).sum()

        params = [weight, bias] if self.fit_intercept else [weight]
        optimizer = torch.optim.LBFGS(
            params,
            lr=1.0,
            max_iter=self.max_iter,
            max_eval=self.max_iter * 2,
            tolerance_grad=self.tol,
            tolerance_change=64 * float(np.finfo(np.float64).eps),
            history_size=10,
            line_search_fn="strong_wolfe",
        )

        def closure() -> torch.Tensor:
            optimizer.zero_grad()
            loss = objective()
            loss.backward()  # type: ignore[no-untyped-call]
            return loss

        optimizer.step(closure)  # type: ignore[no-untyped-call]
        self.n_iter_ = int(optimizer.state[weight].get("n_iter", 0))
        if self.n_iter_ >= self.max_iter:
            warnings.warn(
                f"LogisticRegression did not converge in {self.max_iter} iterations; "
                "increase max_iter or standardize the features.",
                RuntimeWarning,
                stacklevel=2,
            )
        with torch.no_grad():
            centred = bias - bias.mean() if k > 1 else bias  # softmax is shift-invariant
            self._weight, self._bias = weight.detach().clone(), centred.detach().clone()
        self._classes = classes
        return self

    @property
    def classes_(self) -> npt.NDArray[Any]:
        """The distinct labels seen in ``fit``, sorted; column order of ``predict_proba``."""
        self._fitted()
        assert self._classes is not None
        return self._classes

    @property
    def coef_(self) -> npt.NDArray[np.float64]:
        """Weights ``(1, d)`` for two classes, ``(K, d)`` for ``K > 2``."""
        return self._fitted()[0].numpy()

    @property
    def intercept_(self) -> npt.NDArray[np.float64]:
        """Intercepts ``(1,)`` for two classes, ``(K,)`` for ``K > 2``."""
        return self._fitted()[1].numpy()

    def decision_function(self, X: Any) -> npt.NDArray[np.float64]:
        """Raw scores: ``(N,)`` log-odds of ``classes_[1]`` for two classes, else ``(N, K)``."""
        scores = self._linear(X)  # (N, k)
        return (scores[:, 0] if scores.shape[1] == 1 else scores).numpy()

    def predict_proba(self, X: Any) -> npt.NDArray[np.float64]:
        """Class probabilities ``(N, K)``, columns in the order of ``classes_``."""
        scores = self._linear(X)  # (N, k)
        if scores.shape[1] == 1:
            p = torch.sigmoid(scores)  # (N, 1)
            return torch.cat([1 - p, p], dim=1).numpy()  # (N, 2)
        return torch.softmax(scores, dim=1).numpy()  # (N, K)

    def predict(self, X: Any) -> npt.NDArray[Any]:
        """The most probable label of each row, ``(N,)``, drawn from ``classes_``."""
        labels: npt.NDArray[Any] = self.classes_[self.predict_proba(X).argmax(axis=1)]
        return labels

    def score(self, X: Any, y: Any = None) -> float:
        """Accuracy of :meth:`predict` against labels ``y``."""
        x, targets = features_targets(X, y, "LogisticRegression")
        return float(np.mean(self.predict(x) == targets.reshape(-1)))

    def to_state(self) -> dict[str, torch.Tensor]:
        """Return the fitted model as tensors only (safetensors-ready, no pickle).

        Numeric labels are stored as a tensor ``classes``; other labels (strings) as the
        UTF-8 bytes of their JSON list in ``classes_json``.
        """
        weight, bias = self._fitted()
        classes = self.classes_
        state = {
            "weight": weight.clone(),
            "bias": bias.clone(),
            "C": torch.tensor(self.C, dtype=_F64),
            "max_iter": torch.tensor(self.max_iter),
            "tol": torch.tensor(self.tol, dtype=_F64),
            "fit_intercept": torch.tensor(self.fit_intercept),
            "n_iter": torch.tensor(self.n_iter_),
        }
        if classes.dtype.kind in "biuf":
            state["classes"] = torch.as_tensor(classes.copy())
        else:
            encoded = json.dumps(classes.tolist()).encode("utf-8")
            state["classes_json"] = torch.tensor(list(encoded), dtype=torch.uint8)
        return state

    @classmethod
    def from_state(cls, state: dict[str, torch.Tensor]) -> LogisticRegression:
        """Rebuild a fitted model from :meth:`to_state`'s tensors."""
        model = cls(
            C=float(state["C"]),
            max_iter=int(state["max_iter"]),
            tol=float(state["tol"]),
            fit_intercept=bool(state["fit_intercept"]),
        )
        model._weight = state["weight"].to(_F64).clone()
        model._bias = state["bias"].to(_F64).clone()
        model.n_iter_ = int(state["n_iter"])
        if "classes" in state:
            model._classes = as_numpy(state["classes"]).copy()
        else:
            text = bytes(state["classes_json"].tolist()).decode("utf-8")
            model._classes = np.asarray(json.loads(text))
        return model

    def __repr__(self) -> str:
        return (
            f"LogisticRegression(C={self.C}, max_iter={self.max_iter}, tol={self.tol}, "
            f"fit_intercept={self.fit_intercept})"
        )
