"""Lepton: an open, self-hostable AI platform.

Example:
    >>> import lepton as lp
    >>> train = lp.data.load("mnist", split="train")  # doctest: +SKIP
    >>> model = lp.models.ConvNet(num_classes=10)  # doctest: +SKIP
    >>> result = lp.fit(model, train, epochs=3)  # doctest: +SKIP
"""

import importlib
from typing import Any

from lepton import data, errors, models
from lepton._version import __version__
from lepton.errors import LeptonError
from lepton.models import LinearRegression, LogisticRegression
from lepton.train import Callback, EarlyStopping, FitResult, evaluate, fit

__all__ = [
    "Callback",
    "Client",
    "EarlyStopping",
    "FitResult",
    "Image",
    "LeptonError",
    "LinearRegression",
    "LogisticRegression",
    "Prediction",
    "Service",
    "Tensor",
    "__version__",
    "automl",
    "compress",
    "data",
    "errors",
    "evaluate",
    "explain",
    "federated",
    "fit",
    "graph",
    "handler",
    "load_model",
    "models",
    "monitor",
    "privacy",
    "recommend",
    "register",
    "registry",
    "serve",
    "start_run",
    "storage",
    "text",
    "tracking",
    "tune",
    "vision",
]


def __getattr__(name: str) -> Any:
    # Tracking and the registry pull in SQLAlchemy: load them on first use, keeping
    # `import lepton` fast.
    if name == "start_run":
        from lepton.tracking import start_run

        return start_run
    if name in ("register", "load_model"):
        from lepton import registry

        return getattr(registry, name)
    if name in ("Service", "handler", "Client", "Image", "Prediction", "Tensor"):
        from lepton import serve

        return getattr(serve, name)
    if name == "automl":
        from lepton.tune import automl

        return automl
    if name in (
        "compress",
        "explain",
        "federated",
        "graph",
        "monitor",
        "privacy",
        "recommend",
        "registry",
        "serve",
        "storage",
        "text",
        "tracking",
        "tune",
        "vision",
    ):
        return importlib.import_module(f"lepton.{name}")
    raise AttributeError(f"module 'lepton' has no attribute {name!r}")


def _dataset_store() -> Any:
    # lp.data.register / load("name@3"): the data layer cannot open the database itself.
    from lepton.storage import DatasetVersionStore

    return DatasetVersionStore()


def _dataset_drift(reference: Any, current: Any) -> dict[str, Any]:
    # lp.data.diff's distribution part: lp.monitor.drift, a layer above data.
    from lepton.monitor import drift

    return drift(reference, current).to_dict()


data._versions.install(store=_dataset_store, compare=_dataset_drift)
