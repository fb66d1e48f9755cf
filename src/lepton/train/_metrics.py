"""Evaluation: the standard metrics of a classifier or regressor, from torchmetrics."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from lepton.data import Dataset
from lepton.errors import LabelError, ShapeError, TrainingError

if TYPE_CHECKING:
    import torchmetrics

__all__ = ["as_dataset", "evaluate", "loss_function", "to_float_batch"]


def as_dataset(data: Any, *, what: str = "data") -> Dataset:
    """Accept a :class:`~lepton.data.Dataset` or an ``(x, y)`` pair of arrays/tensors."""
    if isinstance(data, Dataset):
        return data
    if isinstance(data, tuple) and len(data) == 2:
        return Dataset(data[0], data[1])
    raise TrainingError(
        f"{what} must be a lepton.data.Dataset or an (x, y) tuple, not {type(data).__name__}; "
        f"e.g. lp.data.load('mnist', split='train') or lp.data.Dataset(x, y)"
    )


class _CrossEntropy(nn.CrossEntropyLoss):
    """Cross-entropy that also takes ``(B, T, K)`` logits against ``(B, T)`` labels (one
    per position, e.g. a language model's next tokens): the mean over every position."""

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if input.dim() == 3 and target.dim() == 2 and not target.is_floating_point():
            return super().forward(input.reshape(-1, input.shape[-1]), target.reshape(-1))
        return super().forward(input, target)


def loss_function(task: str | None) -> nn.Module:
    """Cross-entropy for classification, mean squared error for regression."""
    if task == "classification":
        return _CrossEntropy()
    if task == "regression":
        return nn.MSELoss()
    raise LabelError(
        "this dataset has no targets, so there is nothing to fit or evaluate against; "
        "load it with labels (e.g. lp.data.from_csv(path, target='label'))"
    )


def to_float_batch(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Move a feature batch to ``device`` as float32 unless it holds token ids."""
    x = x.to(device, non_blocking=True)
    if not x.is_floating_point() and x.dtype not in (torch.int64, torch.int32):
        x = x.float()
    return x


def _classification_metrics(num_classes: int) -> torchmetrics.MetricCollection:
    import torchmetrics  # imported on first use: it adds about a second to `import lepton`

    kw: dict[str, Any] = {"num_classes": num_classes}
    return torchmetrics.MetricCollection(
        {
            "accuracy": torchmetrics.classification.MulticlassAccuracy(average="micro", **kw),
            "precision": torchmetrics.classification.MulticlassPrecision(average="macro", **kw),
            "recall": torchmetrics.classification.MulticlassRecall(average="macro", **kw),
            "f1": torchmetrics.classification.MulticlassF1Score(average="macro", **kw),
            "auc": torchmetrics.classification.MulticlassAUROC(average="macro", **kw),
        }
    )


def _regression_metrics(num_outputs: int) -> torchmetrics.MetricCollection:
    import torchmetrics

    return torchmetrics.MetricCollection(
        {
            "mse": torchmetrics.MeanSquaredError(num_outputs=num_outputs),
            "mae": torchmetrics.MeanAbsoluteError(num_outputs=num_outputs),
            "r2": torchmetrics.R2Score(multioutput="uniform_average"),
        }
    )


@torch.no_grad()
def evaluate(
    model: nn.Module,
    data: Dataset | tuple[Any, Any],
    *,
    batch_size: int = 1024,
    device: str | torch.device | None = None,
) -> dict[str, float]:
    """Evaluate a model on labelled data.

    Args:
        model: Any ``nn.Module`` mapping a feature batch to logits (classification) or
            predictions (regression).
        data: A :class:`~lepton.data.Dataset` with targets, or an ``(x, y)`` pair.
        batch_size: Samples per forward pass.
        device: Where to run; default: where the model's parameters are.

    Returns:
        Classification: ``accuracy``, ``precision``, ``recall``, ``f1`` (macro), ``auc``
        (macro one-vs-rest) and ``loss`` (mean cross-entropy). Regression: ``mse``,
        ``mae``, ``r2`` and ``loss`` (= mse).

    Example:
        >>> metrics = lp.evaluate(model, lp.data.load("mnist", split="test"))  # doctest: +SKIP
        >>> metrics["accuracy"]  # doctest: +SKIP
        0.9921
    """
    ds = as_dataset(data)
    if ds.targets is None:
        loss_function(None)
    dev = torch.device(device) if device is not None else _model_device(model)
    criterion = loss_function(ds.task)
    was_training = model.training
    model.eval()
    try:
        metrics, total_loss = _run(model, ds, criterion, dev, batch_size)
    finally:
        model.train(was_training)
    computed = metrics.compute()
    order = ("accuracy", "f1", "precision", "recall", "auc", "mse", "mae", "r2")
    return {"loss": total_loss / len(ds)} | {k: float(computed[k]) for k in order if k in computed}


def _run(
    model: nn.Module, ds: Dataset, criterion: nn.Module, dev: torch.device, batch_size: int
) -> tuple[torchmetrics.MetricCollection, float]:
    metrics: torchmetrics.MetricCollection | None = None
    total_loss = 0.0
    for xb, yb in ds.batches(batch_size):
        assert yb is not None
        x = to_float_batch(xb, dev)
        y = yb.to(dev, non_blocking=True)
        out = model(x)
        n = len(y)
        if ds.task == "classification" and y.dim() == 2:  # one label per position
            out, y = out.reshape(-1, out.shape[-1]), y.reshape(-1)
        if metrics is None:
            metrics = _metrics_for(ds, out).to(dev)
        if ds.task == "classification":
            _check_logits(out, y, ds)
            metrics.update(out.softmax(dim=-1), y)
        else:
            out = out.reshape(y.shape)
            metrics.update(out, y)
        total_loss += float(criterion(out, y)) * n
    assert metrics is not None
    return metrics, total_loss


def _metrics_for(ds: Dataset, out: torch.Tensor) -> torchmetrics.MetricCollection:
    if ds.task == "classification" and ds.targets is not None and ds.targets.dim() == 2:
        import torchmetrics  # one label per position: token accuracy (AUROC would hold all)

        accuracy = torchmetrics.classification.MulticlassAccuracy(
            num_classes=max(ds.num_classes or 0, out.shape[-1]), average="micro"
        )
        return torchmetrics.MetricCollection({"accuracy": accuracy})
    if ds.task == "classification":
        return _classification_metrics(max(ds.num_classes or 0, out.shape[-1]))
    assert ds.targets is not None
    return _regression_metrics(1 if ds.targets.dim() == 1 else int(ds.targets.shape[1]))


def _check_logits(out: torch.Tensor, y: torch.Tensor, ds: Dataset) -> None:
    if out.dim() != 2:
        raise ShapeError(
            f"a classifier must output (batch, num_classes) logits, got shape {tuple(out.shape)}"
        )
    if ds.num_classes is not None and out.shape[1] < ds.num_classes:
        raise ShapeError(
            f"the model outputs {out.shape[1]} logits per sample but dataset {ds.name!r} has "
            f"{ds.num_classes} classes; build the model with num_classes={ds.num_classes}"
        )


def _model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")
