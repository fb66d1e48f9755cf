"""Lepton: an open, self-hostable AI platform.

Example:
    >>> import lepton as lp
    >>> train = lp.data.load("mnist", split="train")  # doctest: +SKIP
    >>> model = lp.models.ConvNet(num_classes=10)  # doctest: +SKIP
    >>> result = lp.fit(model, train, epochs=3)  # doctest: +SKIP
"""

from lepton import data, errors, models
from lepton.errors import LeptonError
from lepton.models import LinearRegression, LogisticRegression
from lepton.train import Callback, EarlyStopping, FitResult, evaluate, fit

__version__ = "0.1.0"
__all__ = [
    "Callback",
    "EarlyStopping",
    "FitResult",
    "LeptonError",
    "LinearRegression",
    "LogisticRegression",
    "__version__",
    "data",
    "errors",
    "evaluate",
    "fit",
    "models",
]
