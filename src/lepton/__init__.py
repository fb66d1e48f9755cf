"""Lepton: an open, self-hostable AI platform.

Example:
    >>> import lepton as lp
    >>> train = lp.data.load("mnist", split="train")  # doctest: +SKIP
    >>> model = lp.models.ConvNet(num_classes=10)  # doctest: +SKIP
    >>> result = lp.fit(model, train, epochs=3)  # doctest: +SKIP
"""

import importlib
from typing import TYPE_CHECKING, Any

from lepton import _hooks, errors
from lepton._version import __version__
from lepton.errors import LeptonError

# What mypy sees; at run time `__getattr__` loads each on first use. Not tune and explain:
# they are callable packages (`lp.tune(...)`), typed through `__getattr__`.
if TYPE_CHECKING:
    from lepton import (
        compress,
        data,
        federated,
        graph,
        models,
        monitor,
        privacy,
        recommend,
        registry,
        serve,
        storage,
        text,
        tracking,
        vision,
    )
    from lepton.models import LinearRegression, LogisticRegression
    from lepton.registry import load_model, register
    from lepton.serve import Client, Image, Prediction, Service, Tensor, handler
    from lepton.tracking import start_run
    from lepton.train import Callback, EarlyStopping, FitResult, evaluate, fit
    from lepton.tune import automl

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
    # Everything but the errors loads on first use (PEP 562): data, models and train pull
    # in torch, tracking and the registry SQLAlchemy, and `lepton --help` (the CLI) or a
    # process that only needs `lepton._procs` needs none of them.
    if name in ("LinearRegression", "LogisticRegression"):
        from lepton import models

        return getattr(models, name)
    if name in ("Callback", "EarlyStopping", "FitResult", "evaluate", "fit"):
        from lepton import train

        return getattr(train, name)
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
    if not name.startswith("__"):  # a sub-package: lp.data, lp.tune, lp.train, ...
        try:
            return importlib.import_module(f"lepton.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"lepton.{name}":
                raise
    raise AttributeError(f"module 'lepton' has no attribute {name!r}")


def _dataset_store() -> Any:
    # lp.data.register / load("name@3"): the data layer cannot open the database itself.
    from lepton.storage import DatasetVersionStore

    return DatasetVersionStore()


def _dataset_drift(reference: Any, current: Any) -> dict[str, Any]:
    # lp.data.diff's distribution part: lp.monitor.drift, a layer above data.
    from lepton.monitor import drift

    return drift(reference, current).to_dict()


# lepton.data._versions reads them from here when called (without `import lepton` loading data).
_hooks.DEFAULTS.update(store=_dataset_store, compare=_dataset_drift)
