"""What ``lp.automl`` accepts: tables in, checked; metrics by name.

A ``Dataset``, or an ``(X, y)`` pair of anything array-like (numpy, torch, lists, a
pandas DataFrame / Series when pandas is installed), becomes one :class:`Table`: float64
features with NaN for missing values, encoded targets, the task, the class labels and the
column names. Every mistake is reported here, before any time is spent.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, cast

import numpy as np
import numpy.typing as npt
import torch

from lepton.data import Dataset
from lepton.errors import DataFormatError, EmptyDatasetError, LabelError, TuneError

__all__ = ["METRICS", "Metric", "Table", "as_matrix", "as_table", "check_metric", "metric_value"]

Task = Literal["classification", "regression"]
Matrix = npt.NDArray[np.float64]
Scorer = Callable[[npt.NDArray[Any], npt.NDArray[np.float64]], float]


@dataclass(frozen=True)
class Metric:
    """A score where greater is better, computed from labels and predictions.

    ``predictions`` are class probabilities ``(N, K)`` for classification and values
    ``(N,)`` for regression.
    """

    name: str
    task: Task
    score: Scorer


def _f1(y: npt.NDArray[Any], p: Matrix) -> float:
    from sklearn.metrics import f1_score

    average = "binary" if p.shape[1] == 2 else "macro"
    return float(f1_score(y, p.argmax(1), average=average, labels=range(p.shape[1])))


def _auc(y: npt.NDArray[Any], p: Matrix) -> float:
    from sklearn.metrics import roc_auc_score

    if p.shape[1] == 2:
        return float(roc_auc_score(y, p[:, 1]))
    return float(roc_auc_score(y, p, multi_class="ovr", labels=range(p.shape[1])))


def _sk(name: str, **kw: Any) -> Scorer:
    def score(y: npt.NDArray[Any], p: Matrix) -> float:
        from sklearn import metrics

        return float(getattr(metrics, name)(y, p, **kw))

    return score


METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("accuracy", "classification", lambda y, p: float(np.mean(p.argmax(1) == y))),
        Metric(
            "balanced_accuracy",
            "classification",
            lambda y, p: _sk("balanced_accuracy_score")(y, p.argmax(1)),
        ),
        Metric("f1", "classification", _f1),
        Metric("roc_auc", "classification", _auc),
        Metric(
            "neg_log_loss",
            "classification",
            lambda y, p: -_sk("log_loss", labels=range(p.shape[1]))(y, p),
        ),
        Metric("r2", "regression", _sk("r2_score")),
        Metric("neg_rmse", "regression", lambda y, p: -float(np.sqrt(np.mean((y - p) ** 2)))),
        Metric("neg_mae", "regression", lambda y, p: -float(np.mean(np.abs(y - p)))),
    )
}
_ALIASES = {"rmse": "neg_rmse", "mae": "neg_mae", "log_loss": "neg_log_loss", "auc": "roc_auc"}
DEFAULT_METRIC: dict[Task, str] = {"classification": "accuracy", "regression": "r2"}


def check_metric(metric: str | None, task: Task) -> Metric:
    """The metric called ``metric`` (default: accuracy / r2), checked against the task."""
    name = DEFAULT_METRIC[task] if metric is None else _ALIASES.get(metric, metric)
    fitting = sorted(k for k, m in METRICS.items() if m.task == task)
    if name not in METRICS:
        raise TuneError(f"unknown metric {metric!r}; for {task} use one of {', '.join(fitting)}")
    if METRICS[name].task != task:
        raise TuneError(
            f"metric {metric!r} is for {METRICS[name].task}, but the task is {task}; use one "
            f"of {', '.join(fitting)} (or pass task={METRICS[name].task!r})"
        )
    return METRICS[name]


def metric_value(metric: Metric, y: npt.NDArray[Any], predictions: Matrix) -> float:
    """``metric`` of ``predictions``; NaN when it is undefined (e.g. AUC of one class)."""
    try:
        return metric.score(y, predictions)
    except ValueError:
        return float("nan")


@dataclass
class Table:
    """A checked tabular training set.

    Attributes:
        x: Features ``(N, d)``, float64, NaN where a value is missing.
        y: Class indices ``0..K-1`` (int64) or target values (float64), ``(N,)``.
        task: ``"classification"`` or ``"regression"``.
        classes: The original label of each class index (classification).
        input_names: One name per column of ``x``.
        dataset: The same data as a Lepton ``Dataset`` (lineage for the registry).
        categories: Category lists of pandas ``category`` columns, by column index.
    """

    x: Matrix
    y: npt.NDArray[Any]
    task: Task
    classes: npt.NDArray[Any] | None
    input_names: list[str]
    dataset: Dataset
    categories: dict[int, list[Any]]


def _is_frame(obj: Any) -> bool:
    return hasattr(obj, "columns") and hasattr(obj, "dtypes") and hasattr(obj, "to_numpy")


def _frame_matrix(
    frame: Any, categories: dict[int, list[Any]] | None, names: list[str] | None
) -> tuple[Matrix, list[str], dict[int, list[Any]]]:
    """A DataFrame as float64: numbers and bools as they are, ``category`` columns as codes."""
    if names is not None:
        missing = [n for n in names if n not in frame.columns]
        if missing:
            raise DataFormatError(
                f"the DataFrame lacks the training columns {missing[:5]}; pass the same "
                f"columns as in training"
            )
        frame = frame[names]
    columns, found = [], {}
    for j, name in enumerate(frame.columns):
        col = frame[name]
        if str(col.dtype) == "category":
            levels = list(col.cat.categories) if categories is None else categories.get(j, [])
            codes = np.array([levels.index(v) if v in levels else -1 for v in col], float)
            codes[col.isna().to_numpy()] = np.nan
            codes[codes < 0] = np.nan  # a category unseen in training counts as missing
            found[j] = levels
            columns.append(codes)
        elif col.dtype.kind in "biuf":
            columns.append(col.to_numpy(dtype=np.float64, na_value=np.nan))
        else:
            raise DataFormatError(
                f"column {name!r} holds {col.dtype} values; lp.automl takes numbers, bools and "
                f"pandas 'category' columns: convert it, e.g. df[{name!r}].astype('category')"
            )
    return np.stack(columns, axis=1), [str(c) for c in frame.columns], found


def as_matrix(
    data: Any, *, names: list[str] | None = None, categories: dict[int, list[Any]] | None = None
) -> tuple[Matrix, list[str] | None, dict[int, list[Any]]]:
    """Features of any accepted kind as a float64 ``(N, d)`` matrix, its column names and
    the category lists of pandas ``category`` columns."""
    if isinstance(data, Dataset):
        return data.features.reshape(len(data), -1).double().numpy(), data.feature_names, {}
    if _is_frame(data):
        return _frame_matrix(data, categories, names)
    if isinstance(data, torch.Tensor):
        data = data.detach().cpu().double().numpy()
    try:
        x = np.asarray(data, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DataFormatError(
            f"X must be numeric (N, d), got values that are not numbers ({exc}); encode text "
            f"columns first"
        ) from None
    if x.ndim == 1:
        raise DataFormatError(
            f"X has shape {x.shape}; pass a table (N, d), e.g. X.reshape(-1, 1) for one column"
        )
    if x.ndim == 0 or x.shape[0] == 0:
        raise EmptyDatasetError("X has no rows; pass at least one row per class")
    return x.reshape(x.shape[0], -1), None, {}


def _targets(y: Any) -> npt.NDArray[Any]:
    if isinstance(y, torch.Tensor):
        return y.detach().cpu().numpy()
    if hasattr(y, "to_numpy"):
        return np.asarray(y.to_numpy())
    return np.asarray(y)


def as_table(data: Any, task: str | None, *, min_per_class: int) -> Table:
    """Check ``data`` (a ``Dataset`` or an ``(X, y)`` pair) and bring it to one form.

    Raises:
        TuneError: An unknown task, or one that contradicts the data.
        DataFormatError: X and y of different lengths, or non-numeric features.
        LabelError: Missing targets, continuous labels for classification, one class, or
            a class with fewer than ``min_per_class`` rows.
    """
    if task not in (None, "classification", "regression"):
        raise TuneError(f"task must be 'classification', 'regression' or None, got {task!r}")
    if isinstance(data, Dataset):
        if data.targets is None:
            raise LabelError(f"dataset {data.name!r} has no targets; lp.automl needs labels")
        if task is not None and task != data.task:
            raise TuneError(
                f"dataset {data.name!r} is a {data.task} dataset but task={task!r}; omit task "
                f"or rebuild the Dataset with task={task!r}"
            )
        x, names, categories = as_matrix(data)
        y_raw: npt.NDArray[Any] = data.targets.numpy()
        if data.task == "regression" and y_raw.ndim == 2 and y_raw.shape[1] == 1:
            y_raw = y_raw[:, 0]
        task = data.task
        labels: npt.NDArray[Any] | None = (
            np.array(data.classes) if data.classes is not None else None
        )
        name = data.name
    elif isinstance(data, (tuple, list)) and len(data) == 2:
        x, names, categories = as_matrix(data[0])
        y_raw = _targets(data[1])
        labels, name = None, "automl-data"
    else:
        raise TuneError(
            f"lp.automl takes a lepton Dataset or an (X, y) pair, got {type(data).__name__}; "
            f"e.g. lp.automl(lp.data.load('wine', split='train')) or lp.automl((X, y))"
        )
    if y_raw.ndim != 1:
        raise LabelError(f"y must be one target per row, shaped (N,), got {y_raw.shape}")
    if len(y_raw) != len(x):
        raise DataFormatError(
            f"X has {len(x)} rows but y has {len(y_raw)}; pass one target per row"
        )
    if task is None:
        task = "regression" if y_raw.dtype.kind == "f" else "classification"
    resolved = cast(Task, task)
    if resolved == "regression":
        y = _regression_targets(y_raw)
        classes = None
    else:
        classes, y = _class_targets(y_raw, min_per_class)
        # a Dataset's labels are indices into its class names; other labels name themselves
        labels = np.array([str(labels[c]) if labels is not None else str(c) for c in classes])
    names = names or [f"x{j}" for j in range(x.shape[1])]
    dataset = Dataset(
        x.astype(np.float32), y.astype(np.float32) if resolved == "regression" else y,
        name=name, task=resolved, feature_names=names,
        classes=None if labels is None else [str(c) for c in labels],
    )  # fmt: skip
    return Table(x, y, resolved, classes, names, dataset, categories)


def _regression_targets(y_raw: npt.NDArray[Any]) -> npt.NDArray[np.float64]:
    try:
        y = y_raw.astype(np.float64)
    except (TypeError, ValueError):
        raise LabelError(
            "regression targets must be numbers; pass task='classification' for labels"
        ) from None
    if not np.isfinite(y).all():
        raise LabelError(
            f"y holds {int((~np.isfinite(y)).sum())} NaN or infinite targets; drop those rows"
        )
    return y


def _class_targets(y_raw: npt.NDArray[Any], least: int) -> tuple[npt.NDArray[Any], Any]:
    if y_raw.dtype.kind == "f":
        if not np.isfinite(y_raw).all():
            raise LabelError("y holds NaN labels; drop those rows first")
        if not np.all(y_raw == np.round(y_raw)):
            raise LabelError(
                "y holds continuous values but the task is classification; pass "
                "task='regression', or give class labels"
            )
    try:
        classes, codes = np.unique(y_raw, return_inverse=True)
    except TypeError as exc:
        raise LabelError(f"labels must all be of one type (ints or strings): {exc}") from None
    counts = np.bincount(codes.reshape(-1))
    if len(classes) < 2:
        raise LabelError(f"classification needs at least 2 classes, y has only {classes.tolist()}")
    if counts.min() < least:
        rare = classes[counts.argmin()]
        raise LabelError(
            f"class {rare!r} has {counts.min()} row(s); cross-validation needs at least {least} "
            f"per class: add rows, merge rare classes, or lower cv"
        )
    return classes, codes.reshape(-1).astype(np.int64)
