"""The model zoo, build-by-name registry and classic estimators.

Every zoo model is an ``nn.Module`` registered by a lowercase name, so it can be built
from a JSON manifest and rebuilt identically::

    import lepton as lp

    model = lp.models.ConvNet(num_classes=10, num_filters=[32, 64, 128], kernel_size=3)
    spec = lp.models.model_spec(model)      # {"name": "convnet", "config": {...}}
    twin = lp.models.build(spec)            # same parameter names and shapes

    clf = lp.models.LogisticRegression(C=1.0).fit(X, y)
"""

from lepton.models._conv import ConvNet
from lepton.models._gpt import GPT, CharTokenizer
from lepton.models._linear import LinearRegression
from lepton.models._logistic import LogisticRegression
from lepton.models._mlp import MLP
from lepton.models._registry import (
    available_models,
    build,
    model_defaults,
    model_parameters,
    model_spec,
    register_model,
    respec,
)
from lepton.models._resnet import ResNet
from lepton.models._sequence import GRUClassifier, LSTMClassifier, TransformerClassifier
from lepton.models._tabular import TabularEnsemble, TabularPipeline
from lepton.models._tabular_trees import TreeEnsemble

__all__ = [
    "GPT",
    "MLP",
    "CharTokenizer",
    "ConvNet",
    "GRUClassifier",
    "LSTMClassifier",
    "LinearRegression",
    "LogisticRegression",
    "ResNet",
    "TabularEnsemble",
    "TabularPipeline",
    "TransformerClassifier",
    "TreeEnsemble",
    "available_models",
    "build",
    "model_defaults",
    "model_parameters",
    "model_spec",
    "register_model",
    "respec",
]
