"""The articles' ``lepton.tf_train``: ``train`` and ``evaluate`` over ``lp.fit`` and
``lp.evaluate``.

An alias kept so the code printed in the articles about Lepton runs as written (with
``lepton`` for ``leptonai``); ``docs/articles.md`` shows each snippet beside the modern
call. Nothing is trained or measured here: :func:`train` is :func:`lepton.fit` with the
articles' argument names, and :func:`evaluate` is :func:`lepton.evaluate` with a result
that prints as one readable line. New code calls those directly::

    import lepton as lp

    result = lp.fit(model, train, val=test, epochs=10, batch_size=32)
    lp.evaluate(model, test)["accuracy"]

Two environment variables shorten :func:`train` without editing the articles' code (the
test that runs the articles' files sets them; leave them unset for the real run):

| variable | effect |
|---|---|
| ``LEPTON_ARTICLE_EPOCHS`` | at most this many epochs, whatever ``num_epochs`` says |
| ``LEPTON_ARTICLE_TRAIN_ROWS`` | train on the first this-many rows of ``train_dataset`` |
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from typing import Any

from torch import nn

from lepton.data import Dataset
from lepton.errors import ConfigError
from lepton.train import FitResult, fit
from lepton.train import evaluate as _evaluate

__all__ = ["EPOCHS_ENV", "TRAIN_ROWS_ENV", "Evaluation", "evaluate", "train"]

#: Caps ``num_epochs`` of :func:`train` (a whole number >= 1).
EPOCHS_ENV = "LEPTON_ARTICLE_EPOCHS"
#: Trains :func:`train` on the first this-many rows of its ``train_dataset`` (>= 1).
TRAIN_ROWS_ENV = "LEPTON_ARTICLE_TRAIN_ROWS"

_PERCENT = ("accuracy", "precision", "recall", "f1", "auc")


def _limit(name: str) -> int | None:
    """The whole number >= 1 in environment variable ``name``, or ``None`` when unset."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise ConfigError(f"{name} must be a whole number >= 1, got {raw!r}; or unset it")
    return value


def train(
    model: nn.Module,
    train_dataset: Dataset | tuple[Any, Any],
    test_dataset: Dataset | tuple[Any, Any] | None = None,
    num_epochs: int = 10,
    batch_size: int = 32,
    **options: Any,
) -> FitResult:
    """Train ``model`` in place: ``lp.fit(model, train_dataset, val=test_dataset,
    epochs=num_epochs, batch_size=batch_size, **options)``.

    ``test_dataset``, when given, is evaluated after every epoch (the ``val`` columns of
    the progress lines); it never steers training (no early stopping, no best-epoch
    restore), so a later :func:`evaluate` on it is a fair figure. ``options`` are
    :func:`lepton.fit`'s (``lr``, ``optimizer``, ``seed``, ``device``, ``quiet``, ...);
    its defaults apply: AdamW, learning rate 1e-3, seed 0. ``LEPTON_ARTICLE_EPOCHS`` and
    ``LEPTON_ARTICLE_TRAIN_ROWS`` shorten the run (module docs).

    Returns:
        :class:`lepton.FitResult`: the per-epoch history and the final metrics.

    Raises:
        ConfigError: One of the two environment variables is not a whole number >= 1.

    Example:
        >>> model = ConvNet(num_classes=10, kernel_size=[3, 3])  # doctest: +SKIP
        >>> train(model, load_mnist_data(), load_mnist_data(test=True))  # doctest: +SKIP
    """
    epochs_cap, rows_cap = _limit(EPOCHS_ENV), _limit(TRAIN_ROWS_ENV)
    epochs = min(num_epochs, epochs_cap) if epochs_cap is not None else num_epochs
    if rows_cap is not None:
        if isinstance(train_dataset, Dataset):
            train_dataset = train_dataset.subset(slice(0, rows_cap))
        else:
            x, y = train_dataset
            train_dataset = (x[:rows_cap], y[:rows_cap])
    return fit(model, train_dataset, test_dataset, epochs=epochs, batch_size=batch_size, **options)


class Evaluation(Mapping[str, float]):
    """What :func:`evaluate` returns: the metrics of :func:`lepton.evaluate`, read as a
    mapping (``result["accuracy"]``) or as attributes (``result.accuracy``), and printed
    as one line, e.g. ``accuracy 98.62% on 10,000 images, loss 0.041``. ``float(result)``
    is the headline figure (accuracy, else R², else the loss), which a format spec
    formats: ``f"{result:.2%}"`` gives ``98.62%``.

    Attributes:
        metrics: Classification: ``loss``, ``accuracy``, ``f1``, ``precision``,
            ``recall``, ``auc``; regression: ``loss``, ``mse``, ``mae``, ``r2``.
        rows: How many samples were evaluated.
        unit: ``"images"`` for image data, else ``"rows"``.
    """

    def __init__(self, metrics: Mapping[str, float], rows: int, unit: str) -> None:
        self.metrics = dict(metrics)
        self.rows = rows
        self.unit = unit

    def __getitem__(self, name: str) -> float:
        return self.metrics[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.metrics)

    def __len__(self) -> int:
        return len(self.metrics)

    def __getattr__(self, name: str) -> float:
        metrics = self.__dict__.get("metrics", {})
        if name in metrics:
            return float(metrics[name])
        raise AttributeError(f"no metric {name!r}; this evaluation has {', '.join(metrics)}")

    def summary(self) -> str:
        """One line: the headline metric, how many samples, then the loss."""
        m, where = self.metrics, f"on {self.rows:,} {self.unit}"
        if "accuracy" in m:
            return f"accuracy {100 * m['accuracy']:.2f}% {where}, loss {m['loss']:.3g}"
        parts = [f"{k} {v:.4g}" for k, v in m.items() if k != "loss" and k not in _PERCENT]
        return " ".join([", ".join(parts or [f"loss {m['loss']:.4g}"]), where])

    def __float__(self) -> float:
        for name in ("accuracy", "r2", "loss"):
            if name in self.metrics:
                return float(self.metrics[name])
        raise TypeError("this evaluation has no metric to stand for it")

    def __format__(self, spec: str) -> str:
        return format(float(self), spec) if spec else self.summary()

    def __str__(self) -> str:
        return self.summary()

    def __repr__(self) -> str:
        return f"Evaluation({self.summary()})"


def evaluate(model: nn.Module, dataset: Dataset | tuple[Any, Any], **options: Any) -> Evaluation:
    """Evaluate ``model`` on labelled ``dataset``: :func:`lepton.evaluate` (``options``
    are its ``batch_size`` and ``device``), as an :class:`Evaluation` that prints as one
    line.

    Example:
        >>> print(evaluate(model, load_mnist_data(test=True)))  # doctest: +SKIP
        accuracy 99.21% on 10,000 images, loss 0.0252
    """
    metrics = _evaluate(model, dataset, **options)
    if isinstance(dataset, Dataset):
        rows, image = len(dataset), dataset.features.dim() > 2
    else:
        rows, image = len(dataset[0]), getattr(dataset[0], "ndim", 2) > 2
    return Evaluation(metrics, rows, "images" if image else "rows")
