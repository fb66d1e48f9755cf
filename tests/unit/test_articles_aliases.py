"""The articles' modules are aliases of Lepton's own API, not a second implementation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lepton as lp
from lepton import errors, recommender, tf_model, tf_train
from lepton.data import Dataset
from lepton.tf_train import Evaluation, evaluate, train


def test_the_alias_modules_are_lepton_s_own_classes() -> None:
    assert tf_model.ConvNet is lp.models.ConvNet
    assert tf_model.MLP is lp.models.MLP
    assert recommender.Recommender is lp.recommend.Recommender
    for name in tf_model.__all__:
        assert getattr(tf_model, name) is getattr(lp.models, name)


def _digits() -> tuple[Dataset, Dataset]:
    return lp.data.load("digits", split="train"), lp.data.load("digits", split="test")


def test_train_is_fit_and_the_environment_caps_epochs_and_rows(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    train_ds, test_ds = _digits()
    torch.manual_seed(0)
    model = lp.models.MLP(in_features=64, num_classes=10, hidden=[32])
    monkeypatch.setenv(tf_train.EPOCHS_ENV, "2")
    monkeypatch.setenv(tf_train.TRAIN_ROWS_ENV, "320")
    result = train(model, train_ds, test_ds, num_epochs=10, batch_size=32, quiet=True)
    assert len(result.history) == 2  # capped from 10
    assert result.samples_per_second > 0
    torch.manual_seed(0)
    twin = lp.models.MLP(in_features=64, num_classes=10, hidden=[32])
    same = lp.fit(twin, train_ds.subset(slice(0, 320)), test_ds, epochs=2, batch_size=32,
                  quiet=True)  # fmt: skip
    assert result.metrics == pytest.approx(same.metrics)  # exactly lp.fit, same seed
    monkeypatch.setenv(tf_train.EPOCHS_ENV, "5")
    assert len(train(model, train_ds, num_epochs=1, quiet=True).history) == 1  # a cap only


@pytest.mark.parametrize("value", ["0", "-1", "two", "1.5"])
def test_a_bad_environment_value_is_refused_with_its_name(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv(tf_train.EPOCHS_ENV, value)
    model = lp.models.MLP(in_features=64, num_classes=10)
    with pytest.raises(errors.ConfigError, match="LEPTON_ARTICLE_EPOCHS must be a whole number"):
        train(model, _digits()[0], num_epochs=1, quiet=True)


def test_evaluate_prints_one_readable_line() -> None:
    train_ds, test_ds = _digits()
    model = lp.models.MLP(in_features=64, num_classes=10, hidden=[64])
    lp.fit(model, train_ds, epochs=3, quiet=True)
    result = evaluate(model, test_ds)
    assert isinstance(result, Evaluation)
    metrics = lp.evaluate(model, test_ds)
    assert dict(result) == metrics
    assert result.accuracy == result["accuracy"] == metrics["accuracy"] > 0.8
    text = f"accuracy {100 * metrics['accuracy']:.2f}% on 359 images, loss {metrics['loss']:.3g}"
    assert str(result) == text
    assert repr(result) == f"Evaluation({text})"
    assert f"{result:.1%}" == f"{100 * metrics['accuracy']:.1f}%"
    assert float(result) == metrics["accuracy"]
    with pytest.raises(AttributeError, match="no metric 'mse'"):
        _ = result.mse


def test_evaluate_a_regression_pair_names_its_metrics() -> None:
    x = torch.linspace(0, 1, 50).unsqueeze(1)  # (50, 1)
    y = 3 * x[:, 0] + 1
    model = torch.nn.Linear(1, 1)
    with torch.no_grad():
        model.weight.fill_(3.0)
        model.bias.fill_(1.0)
    result = evaluate(model, (x, y))
    assert result.rows == 50
    assert result.unit == "rows"
    assert str(result).startswith("mse 0, mae 0, r2 1 on 50 rows")
    assert float(result) == pytest.approx(1.0)  # R² stands for a regression


def test_differential_privacy_takes_a_dataframe_and_a_dict_of_columns() -> None:
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(0)
    table = {"age": rng.integers(18, 90, 400), "smoker": rng.integers(0, 2, 400)}
    frame = pd.DataFrame(table)
    columns = {"age": (0, 100, 10), "smoker": [0, 1]}
    with pytest.raises(errors.NoBudgetError):
        lp.privacy.differential_privacy(frame, epsilon=0.1, columns=columns)
    lp.privacy.set_budget(frame, epsilon=1.0, columns=columns)
    release = lp.privacy.differential_privacy(frame, epsilon=0.1, seed=0)
    assert release.data.feature_names == ["age", "smoker"]
    assert set(release.data.features[:, 1].tolist()) <= {0.0, 1.0}
    # the dict of the same columns is the same table: one budget, now charged twice
    lp.privacy.differential_privacy(table, epsilon=0.1, seed=0)
    assert lp.privacy.budget(frame).spent == pytest.approx(0.2)
    assert lp.privacy.query(frame, "count", epsilon=0.1, seed=0).value > 0


def test_differential_privacy_refuses_text_and_non_tables() -> None:
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame({"city": ["Oslo", "Rome"], "age": [30, 40]})
    with pytest.raises(errors.PrivacyError, match="column 'city' holds object values"):
        lp.privacy.differential_privacy(frame, epsilon=0.1, columns={"age": (0, 100, 10)})
    with pytest.raises(errors.PrivacyError, match="cannot read a table from a list"):
        lp.privacy.differential_privacy([1, 2, 3], epsilon=0.1, columns={"age": (0, 100, 10)})
