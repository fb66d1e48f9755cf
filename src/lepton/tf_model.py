"""The articles' ``lepton.tf_model``: Lepton's model zoo under the articles' module name.

An alias kept so the code printed in the articles about Lepton runs as written (with
``lepton`` for ``leptonai``); ``docs/articles.md`` shows each snippet beside the modern
call. These are the very classes of :mod:`lepton.models` (``lepton.tf_model.ConvNet is
lepton.models.ConvNet``), so a model built here registers, exports and serves like any
other. New code imports them from :mod:`lepton.models`::

    import lepton as lp

    model = lp.models.ConvNet(num_classes=10, num_filters=[32, 64, 128], kernel_size=[3, 3])
"""

from __future__ import annotations

from lepton.models import (
    MLP,
    ConvNet,
    GRUClassifier,
    LSTMClassifier,
    ResNet,
    TransformerClassifier,
    available_models,
    build,
)

__all__ = [
    "MLP",
    "ConvNet",
    "GRUClassifier",
    "LSTMClassifier",
    "ResNet",
    "TransformerClassifier",
    "available_models",
    "build",
]
