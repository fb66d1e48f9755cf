"""``lp.automl`` on real tabular data: the budget, the winner, the pipeline it registers,
the tree ensembles it stores, feature selection, and clear errors for bad calls."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
import torch
from threadpoolctl import threadpool_limits
from typer import Typer
from typer.testing import CliRunner

import lepton as lp
from helpers import run_app
from lepton.errors import DataFormatError, LabelError, TuneError
from lepton.models import TabularEnsemble, TabularPipeline, TreeEnsemble, build, model_spec
from lepton.tune._automl import automl
from lepton.tune._automl_build import Refit, assemble
from lepton.tune._automl_ensemble import Member
from lepton.tune._automl_families import FAMILIES
from lepton.tune._automl_family import Context
from lepton.tune._automl_leaderboard import TrialRow
from lepton.tune._automl_prep import plan_columns
from lepton.tune._automl_select import select_features

pytest.importorskip("optuna")
lightgbm = pytest.importorskip("lightgbm")

BUDGET = 8.0
# The budget is kept within 10%; the extra second covers what no deadline can stop
# mid-way on a busy 2-core machine: one linear fit, the last fold's predictions and the
# pipeline's assembly, each a fraction of a second here.
SLACK_S = 1.0


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """One OpenMP/BLAS thread, as lp.automl uses: spinning pools on a busy 2-core box
    cost seconds per fit."""
    with threadpool_limits(1):
        yield


def _with_missing(x: np.ndarray, fraction: float = 0.1) -> np.ndarray:
    x = x.astype(np.float64).copy()
    x[np.random.default_rng(0).random(x.shape) < fraction] = np.nan
    return x


@pytest.fixture(scope="module")
def cancer() -> dict[str, Any]:
    """One search on breast-cancer, shared by the tests that read its result."""
    train = lp.data.load("breast-cancer", split="train")
    started = time.perf_counter()
    with threadpool_limits(1):
        result = automl(train, budget_s=BUDGET, seed=0, quiet=True)
    return {"result": result, "seconds": time.perf_counter() - started, "train": train,
            "test": lp.data.load("breast-cancer", split="test")}  # fmt: skip


@pytest.mark.slow  # the search itself: BUDGET seconds
def test_the_budget_is_kept_and_several_families_compete(cancer: dict[str, Any]) -> None:
    result = cancer["result"]
    assert cancer["seconds"] <= 1.1 * BUDGET + SLACK_S
    assert result.seconds <= cancer["seconds"]
    finished = {row.family for row in result.leaderboard.rows if row.state == "complete"}
    assert len(finished) >= 2, result.leaderboard.to_dicts()
    completed = {row.number: row for row in result.leaderboard.completed}
    members = result.best.members  # one trial, or the ensemble chosen among them
    assert members
    assert all(m["trial"] in completed for m in members)
    assert sum(m["weight"] for m in members) == pytest.approx(1.0)
    if len(members) == 1:
        assert result.best.score == completed[members[0]["trial"]].score
    assert all(0.0 <= row.score <= 1.0 for row in result.leaderboard.completed)
    assert "leaderboard" in result.summary()
    assert result.best.family in repr(result)


def test_the_winner_beats_the_majority_class_on_held_out_rows(cancer: dict[str, Any]) -> None:
    result, test = cancer["result"], cancer["test"]
    majority = float(np.bincount(test.targets.numpy()).max() / len(test))
    accuracy = result.score(test)
    assert accuracy > majority + 0.2  # 0.63 -> at least 0.83 (about 0.95 in practice)
    predicted = result.predict(test)
    assert accuracy == pytest.approx(float(np.mean(predicted == test.targets.numpy())))
    proba = result.predict_proba(test.features.numpy())
    assert proba.shape == (len(test), 2)
    np.testing.assert_allclose(proba.sum(1), 1.0, atol=1e-12)


def test_the_registered_winner_reloads_and_serves_the_same(cancer: dict[str, Any]) -> None:
    result, test = cancer["result"], cancer["test"]
    version = result.register("cancer-automl")
    assert version.ref == "cancer-automl:1"
    assert version.manifest["architecture"]["name"] == "tabular_pipeline"
    assert version.manifest["output_schema"]["classes"] == ["malignant", "benign"]
    assert f"cv_{result.best.metric}" in version.metrics
    loaded = lp.load_model(version.ref)
    assert isinstance(loaded, TabularPipeline)
    with torch.no_grad():
        assert torch.equal(loaded(test.features), result.model(test.features))

    async def scenario(client: httpx.AsyncClient, _app: Any) -> dict[str, Any]:
        answer = await client.post("/predict", json={"inputs": test.features[0].tolist()})
        assert answer.status_code == 200, answer.text
        return answer.json()  # type: ignore[no-any-return]

    served = run_app(lp.serve.ModelService(version.ref), scenario)
    expected = result.predict_proba(test.features[:1].numpy())[0]
    assert served["label"] == ["malignant", "benign"][int(expected.argmax())]
    np.testing.assert_allclose(served["probabilities"], expected, atol=1e-6)


def test_feature_selection_reports_kept_features_by_name(cancer: dict[str, Any]) -> None:
    report = cancer["result"].features
    assert set(report.kept) <= set(cancer["train"].feature_names)
    assert report.kept
    assert set(report.kept) | set(report.dropped) == set(report.votes)
    assert report.columns["mean radius"] == "numeric"
    assert report.mutual_information["worst radius"] > 0.1

    # five columns of noise appended to the real ones: the methods vote them out
    train = cancer["train"]
    noise = np.random.default_rng(1).normal(size=(len(train), 5))
    x = np.hstack([train.features.numpy().astype(np.float64), noise])
    names = [*train.feature_names, *(f"noise_{i}" for i in range(5))]
    plan = plan_columns(x, names)
    kept, report = select_features(plan.transform(x), train.targets.numpy(), plan.feature_names,
                                   classify=True, seed=0, until=math.inf)  # fmt: skip
    assert {"worst radius", "worst concave points"} <= set(report.kept)
    assert sum(name.startswith("noise_") for name in report.dropped) >= 4, report.votes
    assert report.l1
    assert report.permutation
    assert not report.notes
    assert len(kept) == len(report.kept)


def test_preprocessing_follows_the_columns() -> None:
    wine = lp.data.load("wine", split="all")
    x = _with_missing(wine.features.numpy(), 0.05)
    x[:, 0] = np.digitize(np.nan_to_num(x[:, 0], nan=13.0), [12.5, 13.5, 14.0])  # 4 levels
    x = np.hstack([x, np.ones((len(x), 1))])  # a constant column
    names = [*wine.feature_names, "constant"]
    plan = plan_columns(x, names)
    assert plan.kinds["alcohol"].startswith("one-hot (4 levels) + code")
    assert plan.kinds["constant"] == "constant: dropped"
    assert "malic_acid_missing" in plan.feature_names
    assert [n for n in plan.feature_names if n.startswith("alcohol=")] == [
        "alcohol=0", "alcohol=1", "alcohol=2", "alcohol=3"]  # fmt: skip
    z = plan.transform(x)
    assert z.shape == (len(x), len(plan.feature_names))
    assert np.isfinite(z).all()
    row = np.array([x[0]])
    row[0, 0], row[0, 1] = 7.0, np.nan  # an unseen level, a missing value
    features = dict(zip(plan.feature_names, plan.transform(row)[0], strict=True))
    assert [features[f"alcohol={v}"] for v in range(4)] == [0.0, 0.0, 0.0, 0.0]
    assert features["malic_acid_missing"] == 1.0
    median = np.nanmedian(x[:, 1])
    i = plan.numeric_column.index(1)
    assert features["malic_acid"] == pytest.approx((median - plan.mean[i]) / plan.scale[i])


def _sklearn_and_lightgbm(task: str) -> list[tuple[Any, np.ndarray, np.ndarray]]:
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    name = {"binary": "breast-cancer", "multiclass": "wine", "regression": "diabetes"}[task]
    data = lp.data.load(name, split="all")
    x, y = _with_missing(data.features.numpy()), data.targets.numpy()
    if task == "regression":
        models = [HistGradientBoostingRegressor(max_iter=30, random_state=0),
                  lightgbm.LGBMRegressor(n_estimators=30, verbose=-1, n_jobs=1)]  # fmt: skip
    else:
        models = [HistGradientBoostingClassifier(max_iter=30, random_state=0),
                  lightgbm.LGBMClassifier(n_estimators=30, verbose=-1, n_jobs=1)]  # fmt: skip
    return [(m.fit(x, y), x, y) for m in models]


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_tree_ensembles_reproduce_scikit_learn_and_lightgbm(task: str) -> None:
    for fitted, x, _ in _sklearn_and_lightgbm(task):
        is_lgbm = type(fitted).__module__.startswith("lightgbm")
        trees = TreeEnsemble.from_lightgbm(fitted) if is_lgbm else TreeEnsemble.from_sklearn(fitted)
        twin = build(model_spec(trees))  # the registry's path: config, then the tensors
        twin.load_state_dict(trees.state_dict())
        with torch.no_grad():
            out = twin(torch.as_tensor(x))
        if task == "regression":
            np.testing.assert_allclose(out[:, 0].numpy(), fitted.predict(x), rtol=1e-12)
        else:
            np.testing.assert_allclose(out.softmax(1).numpy(), fitted.predict_proba(x), atol=1e-12)
            assert np.array_equal(out.argmax(1).numpy(), fitted.predict(x))


@pytest.mark.parametrize(
    "family", ["linear", pytest.param("mlp", marks=pytest.mark.slow), "hgb", "lightgbm"]
)  # the MLP's first lp.fit in a process imports torch's compiler stack: seconds
def test_every_family_becomes_a_pipeline_that_reloads_exactly(family: str) -> None:
    wine = lp.data.load("wine", split="all")
    x, y = _with_missing(wine.features.numpy(), 0.05), wine.targets.numpy()
    plan = plan_columns(x, wine.feature_names)
    z = plan.transform(x)
    ctx = Context("classification", 3, 0, 1)
    chosen = FAMILIES[family]
    params = chosen.defaults(len(y), ctx)
    params = chosen.shrink(params, 0.2)  # a quick fit is enough here
    model, cut = chosen.fit(params, z, y, ctx, math.inf)
    head = chosen.head(model, z.shape[1], ctx)
    pipeline = plan.pipeline(head.spec, None, 3, head.target)
    pipeline.head.load_state_dict(head.state)
    with torch.no_grad():
        out = pipeline(torch.as_tensor(x))
    np.testing.assert_allclose(out.softmax(1).numpy(), chosen.predict(model, z, ctx), atol=1e-5)
    version = lp.register(pipeline, f"wine-{family}")
    with torch.no_grad():
        assert torch.equal(lp.load_model(version.ref)(torch.as_tensor(x)), out)
    assert not cut


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_an_ensemble_pipeline_reloads_exactly(task: str) -> None:
    data = lp.data.load("wine" if task == "classification" else "diabetes", split="all")
    x, y = _with_missing(data.features.numpy(), 0.05), data.targets.numpy()
    plan = plan_columns(x, data.feature_names)
    z = plan.transform(x)
    kept = list(range(0, z.shape[1], 2))  # as if selection kept every other feature
    matrices = {"selected": z[:, kept], "all": z}
    ctx = Context(task, 3 if task == "classification" else None, 0, 1)  # type: ignore[arg-type]
    fitted, expected = [], np.zeros(len(y) if task == "regression" else (len(y), 3))
    for number, (family, subset, weight) in enumerate(
        [("linear", "all", 0.6), ("lightgbm", "selected", 0.4)], 1
    ):
        chosen = FAMILIES[family]
        params = chosen.shrink(chosen.defaults(len(y), ctx), 0.3)
        model, _ = chosen.fit(params, matrices[subset], y, ctx, math.inf)
        expected += weight * chosen.predict(model, matrices[subset], ctx)
        trial = TrialRow(number, family, {**params, "features": subset})
        head = chosen.head(model, matrices[subset].shape[1], ctx)
        fitted.append(Refit(Member(trial, weight), weight, head, subset))
    pipeline = assemble(fitted, plan, kept, ctx.num_classes)
    assert isinstance(pipeline.head, TabularEnsemble)
    with torch.no_grad():
        out = pipeline(torch.as_tensor(x))
    got = out.softmax(1).numpy() if task == "classification" else out[:, 0].numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-9)
    version = lp.register(pipeline, f"ensemble-{task}")
    with torch.no_grad():
        assert torch.equal(lp.load_model(version.ref)(torch.as_tensor(x)), out)


def test_arrays_with_string_labels_give_labels_back() -> None:
    data = lp.data.load("iris", split="all")
    names = np.array(["setosa", "versicolor", "virginica"])
    x, y = data.features.numpy(), names[data.targets.numpy()]
    result = automl((x, y), budget_s=3, families=["linear"], metric="f1", quiet=True)
    assert result.task == "classification"
    assert result.best.metric == "f1"
    assert set(result.predict(x[:20]).tolist()) <= set(names.tolist())
    assert result.score(x, y) > 0.9
    with pytest.raises(LabelError, match="not seen in training"):
        result.score(x[:2], ["setosa", "rose"])


def test_regression_is_inferred_from_float_targets() -> None:
    train = lp.data.load("diabetes", split="train")
    x, y = train.features.numpy(), train.targets.numpy().astype(np.float64)
    result = automl((x, y), budget_s=3, families=["linear"], metric="neg_rmse", quiet=True)
    assert result.task == "regression"
    assert result.best.score < 0
    assert result.predict(x).shape == (len(y),)
    with pytest.raises(LabelError, match="predict_proba is for classification"):
        result.predict_proba(x)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"task": "clustering"}, TuneError, "task must be 'classification', 'regression'"),
        ({"budget_s": 0}, TuneError, "budget_s must be a number of seconds > 0"),
        ({"budget_s": -5}, TuneError, "budget_s must be"),
        ({"metric": "r2"}, TuneError, "metric 'r2' is for regression.*use one of accuracy"),
        ({"metric": "precision_at_k"}, TuneError, "unknown metric 'precision_at_k'"),
        ({"cv": 1}, TuneError, "cv must be an int >= 2"),
        ({"families": ["xgboost"]}, TuneError, "families must be a non-empty list"),
        ({"task": "regression"}, TuneError, "is a classification dataset but task='regression'"),
    ],
)
def test_bad_calls_get_clear_errors(kwargs: dict[str, Any], error: type, match: str) -> None:
    wine = lp.data.load("wine", split="train")
    with pytest.raises(error, match=match):
        automl(wine, quiet=True, **kwargs)


def test_bad_data_gets_clear_errors() -> None:
    wine = lp.data.load("wine", split="train")
    x, y = wine.features.numpy(), wine.targets.numpy()
    with pytest.raises(DataFormatError, match=r"X has 142 rows but y has 141"):
        automl((x, y[:-1]), quiet=True)
    with pytest.raises(LabelError, match="continuous values but the task is classification"):
        automl((x, y + 0.5), task="classification", quiet=True)
    with pytest.raises(LabelError, match="at least 2 classes"):
        automl((x, np.zeros(len(x), dtype=np.int64)), quiet=True)
    with pytest.raises(TuneError, match=r"takes a lepton Dataset or an \(X, y\) pair"):
        automl(x, quiet=True)  # type: ignore[arg-type]


def test_the_cli_searches_and_prints_json() -> None:
    from lepton.cli._automl import automl as command

    app = Typer()
    app.command()(command)
    app.command("noop")(lambda: None)  # two commands, so the name selects `automl`
    result = CliRunner().invoke(
        app, ["automl", "wine", "--budget", "3", "--family", "linear", "--json"]
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["best"]["family"] == "linear"
    assert summary["test_score"] > 0.8
    assert summary["seconds"] <= 1.1 * 3 + SLACK_S
    assert {"leaderboard", "features", "notes", "registered"} <= set(summary)
