"""Build-by-name: names, specs, config validation, custom registrations, the public surface."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import lepton.models as lm
from lepton.errors import UnknownModelError
from lepton.models import _registry


def test_public_surface_is_exact() -> None:
    assert sorted(lm.__all__) == sorted(
        [
            "MLP",
            "GPT",
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
    )
    assert all(hasattr(lm, name) for name in lm.__all__)


def test_available_models_lists_the_zoo() -> None:
    zoo = {"convnet", "gru", "lstm", "mlp", "resnet", "transformer"}
    assert zoo <= set(lm.available_models())
    assert lm.available_models() == sorted(lm.available_models())


def test_build_by_name_and_by_spec() -> None:
    model = lm.build("convnet", num_classes=10)
    assert isinstance(model, lm.ConvNet)
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    spec = {"name": "mlp", "config": {"in_features": 4, "num_classes": 3}}
    mlp = lm.build(spec, hidden=[8])  # keyword arguments override the spec
    assert lm.model_spec(mlp)["config"]["hidden"] == [8]
    assert lm.build({"name": "mlp", "config": {"in_features": 2, "out_features": 1}})


def test_spec_is_json_and_rebuilds_same_parameters() -> None:
    model = lm.ResNet(num_classes=4, widths=(8, 16))
    spec = lm.model_spec(model)
    assert json.loads(json.dumps(spec)) == spec
    assert spec["config"]["widths"] == [8, 16]  # tuples are stored as JSON lists
    twin = lm.build(spec)
    assert {k: v.shape for k, v in twin.state_dict().items()} == {
        k: v.shape for k, v in model.state_dict().items()
    }


def test_unknown_name_suggests_the_closest() -> None:
    with pytest.raises(UnknownModelError, match=r"'convnet'.*Known models: convnet, gpt, gru"):
        lm.build("convnett", num_classes=10)


def test_unknown_config_key_shows_signature() -> None:
    with pytest.raises(
        UnknownModelError, match=r"argument 'filters'.*valid signature is ConvNet\(num_classes: int"
    ):
        lm.build("convnet", num_classes=10, filters=[3])


def test_bad_config_value_shows_signature_and_a_correct_call() -> None:
    with pytest.raises(UnknownModelError, match=r"num_classes must be .* correct call.*signature"):
        lm.build("convnet", num_classes="ten")


def test_malformed_spec() -> None:
    with pytest.raises(
        UnknownModelError, match=r"A model spec is \{'name': str, 'config': dict\}.*e\.g\. build"
    ):
        lm.build({"model": "mlp"})


def test_model_spec_of_unregistered_module() -> None:
    with pytest.raises(
        UnknownModelError, match=r"not a registered model.*register_model\('name'\)"
    ):
        lm.model_spec(nn.Linear(2, 2))


def test_register_custom_model_records_its_arguments() -> None:
    @lm.register_model("test-tiny")
    class Tiny(nn.Module):
        def __init__(self, width: int = 3, scale: float = 1.0) -> None:
            super().__init__()
            self.fc = nn.Linear(width, 2)
            self.scale = scale

    try:
        model = Tiny(5)
        assert lm.model_spec(model) == {"name": "test-tiny", "config": {"width": 5, "scale": 1.0}}
        assert isinstance(lm.build("test-tiny", width=4), Tiny)
        with pytest.raises(UnknownModelError, match=r"already registered.*choose another name"):
            lm.register_model("test-tiny")(nn.Linear)
        with pytest.raises(
            UnknownModelError, match=r"lowercase, got 'Tiny'; use register_model\('tiny'\)"
        ):
            lm.register_model("Tiny")
    finally:
        _registry._REGISTRY.pop("test-tiny")


def test_model_parameters_lists_constructor_arguments() -> None:
    assert lm.model_parameters("convnet") == [
        "num_classes",
        "num_filters",
        "kernel_size",
        "dropout",
        "in_channels",
        "input_size",
        "norm",
    ]
    with pytest.raises(UnknownModelError, match=r"Did you mean 'convnet'\?"):
        lm.model_parameters("convnett")
