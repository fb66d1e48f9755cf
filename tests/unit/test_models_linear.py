"""Classic estimators against scikit-learn on its bundled datasets, plus state and errors."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from sklearn import datasets, linear_model
from sklearn.preprocessing import StandardScaler

import lepton.models as lm
from lepton.errors import (
    DataError,
    EmptyDatasetError,
    LabelError,
    NotFittedError,
    ShapeError,
    UnknownModelError,
)


def _standardized(loader: str) -> tuple[np.ndarray, np.ndarray]:
    X, y = getattr(datasets, loader)(return_X_y=True)
    return StandardScaler().fit_transform(X), y


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.mark.parametrize("fit_intercept", [True, False])
def test_linear_regression_matches_sklearn(fit_intercept: bool) -> None:
    X, y = datasets.load_diabetes(return_X_y=True)
    ours = lm.LinearRegression(fit_intercept=fit_intercept).fit(X, y)
    ref = linear_model.LinearRegression(fit_intercept=fit_intercept).fit(X, y)
    assert ours.coef_.shape == ref.coef_.shape
    assert _rel(ours.coef_, ref.coef_) < 1e-6
    assert ours.intercept_ == pytest.approx(ref.intercept_, rel=1e-6, abs=1e-9)
    np.testing.assert_allclose(ours.predict(X), ref.predict(X), rtol=1e-6)
    assert ours.score(X, y) == pytest.approx(ref.score(X, y), rel=1e-9)


@pytest.mark.parametrize("alpha", [0.1, 1.0, 25.0])
def test_ridge_matches_sklearn(alpha: float) -> None:
    X, y = datasets.load_diabetes(return_X_y=True)
    ours = lm.LinearRegression(alpha=alpha).fit(X, y)
    ref = linear_model.Ridge(alpha=alpha).fit(X, y)
    assert _rel(ours.coef_, ref.coef_) < 1e-6
    assert ours.intercept_ == pytest.approx(ref.intercept_, rel=1e-6)


def test_multi_output_regression_and_module() -> None:
    X, y = datasets.load_diabetes(return_X_y=True)
    Y = np.stack([y, -2 * y + X[:, 0]], axis=1)  # (N, 2)
    ours = lm.LinearRegression(alpha=0.5).fit(torch.tensor(X), torch.tensor(Y))
    ref = linear_model.Ridge(alpha=0.5).fit(X, Y)
    assert ours.coef_.shape == (2, 10)
    assert ours.intercept_.shape == (2,)
    assert _rel(ours.coef_, ref.coef_) < 1e-6
    assert ours.score(X, Y) == pytest.approx(ref.score(X, Y), rel=1e-9)
    with torch.no_grad():
        out = ours.module(torch.tensor(X)).numpy()
    np.testing.assert_allclose(out, ours.predict(X), rtol=1e-12)


@pytest.mark.parametrize(("loader", "C"), [("load_iris", 1.0), ("load_wine", 0.1)])
def test_multinomial_logistic_matches_sklearn(loader: str, C: float) -> None:
    X, y = _standardized(loader)
    ours = lm.LogisticRegression(C=C, tol=1e-10, max_iter=1000).fit(X, y)
    ref = linear_model.LogisticRegression(C=C, tol=1e-12, max_iter=10_000).fit(X, y)
    assert np.abs(ours.predict_proba(X) - ref.predict_proba(X)).max() < 1e-3
    assert ours.score(X, y) == ref.score(X, y)
    assert ours.coef_.shape == ref.coef_.shape
    np.testing.assert_array_equal(ours.classes_, ref.classes_)
    assert 0 < ours.n_iter_ < 1000


def test_binary_logistic_matches_sklearn() -> None:
    X, y = _standardized("load_breast_cancer")
    ours = lm.LogisticRegression(C=0.5, tol=1e-10, max_iter=1000).fit(X, y)
    ref = linear_model.LogisticRegression(C=0.5, tol=1e-12, max_iter=10_000).fit(X, y)
    assert np.abs(ours.predict_proba(X) - ref.predict_proba(X)).max() < 1e-3
    np.testing.assert_array_equal(ours.predict(X), ref.predict(X))
    assert ours.coef_.shape == (1, 30)
    assert ours.decision_function(X).shape == (len(X),)
    np.testing.assert_allclose(ours.coef_, ref.coef_, atol=1e-3)
    probs = torch.sigmoid(ours.module(torch.tensor(X)))[:, 0].detach().numpy()
    np.testing.assert_allclose(probs, ours.predict_proba(X)[:, 1], rtol=1e-12)


def test_string_labels_and_dataset_like_input() -> None:
    X, y = _standardized("load_iris")
    names = np.array(["setosa", "versicolor", "virginica"])[y]
    data = SimpleNamespace(features=torch.tensor(X, dtype=torch.float32), targets=names)
    clf = lm.LogisticRegression().fit(data)
    assert list(clf.classes_) == ["setosa", "versicolor", "virginica"]
    assert clf.score(data) > 0.95
    assert set(clf.predict(X[:5])) <= set(names)


@pytest.mark.parametrize("labels", ["ints", "strings"])
def test_logistic_state_round_trip(labels: str) -> None:
    X, y = _standardized("load_wine")
    target = y + 10 if labels == "ints" else np.array(["a", "b", "c"])[y]
    clf = lm.LogisticRegression(C=0.3).fit(X, target)
    state = clf.to_state()
    assert state
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    clone = lm.LogisticRegression.from_state(state)
    np.testing.assert_array_equal(clone.predict(X), clf.predict(X))
    np.testing.assert_array_equal(clone.predict_proba(X), clf.predict_proba(X))
    assert clone.get_params() == clf.get_params() == {
        "C": 0.3, "max_iter": 200, "tol": 1e-6, "fit_intercept": True,
    }  # fmt: skip


def test_linear_state_round_trip() -> None:
    X, y = datasets.load_diabetes(return_X_y=True)
    reg = lm.LinearRegression(alpha=2.0).fit(X, y)
    clone = lm.LinearRegression.from_state(reg.to_state())
    np.testing.assert_array_equal(clone.predict(X), reg.predict(X))
    assert clone.get_params() == {"fit_intercept": True, "alpha": 2.0}
    assert clone.predict(X).shape == (len(X),)


@pytest.mark.parametrize("cls", [lm.LinearRegression, lm.LogisticRegression])
def test_predict_before_fit(cls: type[lm.LinearRegression | lm.LogisticRegression]) -> None:
    with pytest.raises(NotFittedError, match=r"call \.fit\(X, y\) first"):
        cls().predict(np.zeros((2, 3)))


def test_input_errors() -> None:
    X, y = _standardized("load_iris")
    clf = lm.LogisticRegression().fit(X, y)
    with pytest.raises(ShapeError, match="fitted on 4 features but X has 3; pass the same columns"):
        clf.predict(X[:, :3])
    with pytest.raises(
        ShapeError, match=r"150 rows in X but y has shape \(149,\); pass one target per row"
    ):
        lm.LinearRegression().fit(X, y[:-1])
    with pytest.raises(ShapeError, match=r"reshape\(-1, 1\)"):
        lm.LinearRegression().fit(X[:, 0], y)
    bad = X.copy()
    bad[3, 1] = np.nan
    with pytest.raises(
        DataError, match=r"drop or impute them first, e\.g\. with lepton\.data\.clean"
    ):
        lm.LinearRegression().fit(bad, y)
    with pytest.raises(DataError, match="NaN or infinite values in 1 row"):
        clf.predict_proba(np.where(bad == bad, bad, np.inf))
    with pytest.raises(EmptyDatasetError, match="pass at least one row and one column"):
        lm.LogisticRegression().fit(np.zeros((0, 4)), np.zeros(0))


def test_label_errors() -> None:
    X, _ = _standardized("load_iris")
    with pytest.raises(LabelError, match=r"at least 2 classes in y.*check the labels"):
        lm.LogisticRegression().fit(X, np.ones(len(X)))
    with pytest.raises(LabelError, match="Use LinearRegression"):
        lm.LogisticRegression().fit(X, np.linspace(0, 1, len(X)))
    with pytest.raises(LabelError, match=r"needs targets: call \.fit\(X, y\)"):
        lm.LogisticRegression().fit(X)


def test_invalid_hyper_parameters() -> None:
    with pytest.raises(
        UnknownModelError, match=r"C must be a float > 0, got 0; e\.g\. LogisticRegression\(C=1\.0"
    ):
        lm.LogisticRegression(C=0)
    with pytest.raises(
        UnknownModelError,
        match=r"alpha must be a float >= 0, got -1; e\.g\. LinearRegression\(alpha=1\.0\)",
    ):
        lm.LinearRegression(alpha=-1)


def test_pandas_frames_and_series_are_taken_as_they_are() -> None:
    pd = pytest.importorskip("pandas")  # optional for users; the dev set-up installs it
    data = datasets.load_diabetes(as_frame=True)
    X, y = data.data, data.target  # a DataFrame and a Series
    ours = lm.LinearRegression().fit(X, y)
    theirs = linear_model.LinearRegression().fit(X.to_numpy(), y.to_numpy())
    np.testing.assert_allclose(ours.predict(X), theirs.predict(X.to_numpy()), rtol=1e-6)
    labels = pd.Series(np.where(y > y.median(), "high", "low"))
    clf = lm.LogisticRegression().fit(X, labels)
    assert set(clf.predict(X[:5])) <= {"high", "low"}
    assert clf.score(X, labels) > 0.7
    with_text = X.assign(city=["a"] * len(X))
    with pytest.raises(ShapeError, match="column\\(s\\) city are not numbers: encode them"):
        lm.LinearRegression().fit(with_text, y)
