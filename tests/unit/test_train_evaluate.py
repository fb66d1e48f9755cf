"""lp.evaluate against scikit-learn's metrics on the same predictions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn import metrics as skm

import lepton as lp


def test_classification_metrics_match_sklearn() -> None:
    train = lp.data.load("digits", split="train")
    test = lp.data.load("digits", split="test")
    torch.manual_seed(0)
    model = lp.models.MLP(in_features=64, num_classes=10, hidden=[16])
    lp.fit(model, train, epochs=2, lr=1e-3, quiet=True)  # deliberately under-trained
    got = lp.evaluate(model, test, batch_size=50)

    model.eval()
    with torch.no_grad():
        logits = model(test.features)
    proba = logits.softmax(dim=1).numpy()
    assert test.targets is not None
    y = test.targets.numpy()
    pred = proba.argmax(axis=1)
    assert got["accuracy"] == pytest.approx(skm.accuracy_score(y, pred), abs=1e-6)
    assert got["precision"] == pytest.approx(
        skm.precision_score(y, pred, average="macro", zero_division=0), abs=1e-5
    )
    assert got["recall"] == pytest.approx(skm.recall_score(y, pred, average="macro"), abs=1e-5)
    assert got["f1"] == pytest.approx(skm.f1_score(y, pred, average="macro"), abs=1e-5)
    assert got["auc"] == pytest.approx(
        skm.roc_auc_score(y, proba, multi_class="ovr", average="macro"), abs=1e-4
    )
    loss = torch.nn.functional.cross_entropy(logits, test.targets).item()
    assert got["loss"] == pytest.approx(loss, rel=1e-5)
    assert 0.3 < got["accuracy"] < 1.0


def test_regression_metrics_match_sklearn() -> None:
    data = lp.data.load("diabetes", split="test")
    torch.manual_seed(0)
    model = lp.models.MLP(in_features=10, out_features=1, hidden=[4])
    got = lp.evaluate(model, data, batch_size=13)
    with torch.no_grad():
        pred = model(data.features).reshape(-1).numpy().astype(np.float64)
    assert data.targets is not None
    y = data.targets.numpy().astype(np.float64)
    assert got["mse"] == pytest.approx(skm.mean_squared_error(y, pred), rel=1e-4)
    assert got["mae"] == pytest.approx(skm.mean_absolute_error(y, pred), rel=1e-4)
    assert got["r2"] == pytest.approx(skm.r2_score(y, pred), rel=1e-4)
    assert got["loss"] == pytest.approx(got["mse"], rel=1e-4)


def test_evaluate_keeps_training_mode() -> None:
    data = lp.data.load("iris", split="test")
    model = lp.models.MLP(in_features=4, num_classes=3)
    model.train()
    lp.evaluate(model, data)
    assert model.training
