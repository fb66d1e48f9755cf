"""lepton.monitor: drift tests against scipy and hand computations, drift decisions on real
data (iris, wine, MNIST vs Fashion-MNIST), windows, anomaly detectors, and the ucr-135 series."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats

import lepton as lp
from lepton import monitor
from lepton.data._ucr import parse_ucr_name
from lepton.errors import (
    ChecksumError,
    DataFormatError,
    DataSourceMissingError,
    MonitorError,
    NotEnoughDataError,
    SchemaMismatchError,
    UnknownMethodError,
)
from lepton.monitor import AnomalyDetector, drift, matrix_profile


def _have_ucr() -> bool:
    return lp.data.info("ucr-135").locate() is not None


needs_ucr = pytest.mark.skipif(
    not _have_ucr(), reason="the ucr-135 files are not here: pip install --no-deps aeon"
)


@pytest.fixture(scope="module")
def iris() -> lp.data.Dataset:
    return lp.data.load("iris", split="all")


@pytest.fixture(scope="module")
def wine() -> np.ndarray:
    x = lp.data.load("wine", split="all").features.numpy().astype(np.float64)
    return x[np.random.default_rng(0).permutation(len(x))]


# --- the statistics, by hand and against scipy ------------------------------------------


def test_psi_matches_the_formula_on_a_tiny_sample() -> None:
    ref = np.arange(10.0)  # one inner edge at the median, 4.5: shares 0.5 / 0.5
    cur = np.array([0, 0, 0, 0, 0, 0, 0, 0, 9, 9], dtype=float)  # shares 0.8 / 0.2
    expected = (0.8 - 0.5) * math.log(0.8 / 0.5) + (0.2 - 0.5) * math.log(0.2 / 0.5)
    assert monitor.psi(ref, cur, bins=2) == pytest.approx(expected, rel=1e-12)
    assert monitor.psi(ref, ref, bins=10) == 0.0


def test_categorical_psi_and_the_share_of_an_empty_bin() -> None:
    got = monitor.psi(["a", "a", "b", "b"], ["a", "a", "a", "b"], categorical=True)
    assert got == pytest.approx(0.25 * math.log(1.5) - 0.25 * math.log(0.5), rel=1e-12)
    # "b" never seen in the reference: its share there counts as 1e-4, not 0
    unseen = monitor.psi(["a"] * 4, ["a", "b"], categorical=True)
    expected = (0.5 - 1.0) * math.log(0.5 / 1.0) + (0.5 - 1e-4) * math.log(0.5 / 1e-4)
    assert unseen == pytest.approx(expected, rel=1e-12)


def test_ks_and_wasserstein_match_scipy_and_hand_values() -> None:
    ref, cur = np.array([1.0, 2, 3, 4]), np.array([3.0, 4, 5, 6])
    statistic, p_value = monitor.ks(ref, cur)
    assert statistic == pytest.approx(0.5)  # the empirical CDFs differ by 2/4 at x = 2..3
    assert p_value == pytest.approx(stats.ks_2samp(ref, cur).pvalue)
    a, b = np.array([0.0, 1, 3]), np.array([5.0, 6, 8])
    assert monitor.wasserstein(a, b, normalize=False) == pytest.approx(5.0)  # a shift by 5
    assert monitor.wasserstein(a, b) == pytest.approx(5.0 / a.std())


def test_chi2_column_is_scipys_contingency_test() -> None:
    ref = {"c": ["a"] * 30 + ["b"] * 30 + ["c"] * 40}
    cur = {"c": ["a"] * 50 + ["b"] * 30 + ["c"] * 20}
    report = drift(ref, cur)
    table = np.array([[30, 30, 40], [50, 30, 20]])
    expected = stats.chi2_contingency(table)
    feature = report["c"]
    assert (feature.kind, feature.method) == ("categorical", "chi2")
    assert feature.statistic == pytest.approx(expected.statistic)
    assert feature.p_value == pytest.approx(expected.pvalue)
    assert feature.drifted


def test_mmd_is_unbiased_and_its_p_value_is_a_permutation_p_value() -> None:
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(40, 3)), rng.normal(size=(30, 3))
    mmd2, p_value, sigma = monitor.mmd(x, y, permutations=99, seed=1)
    # the unbiased estimate, written out with explicit loops over the kernel matrix
    pooled = np.concatenate([x, y])
    k = np.exp(-((pooled[:, None] - pooled[None]) ** 2).sum(-1) / (2 * sigma**2))
    kxx, kyy, kxy = k[:40, :40], k[40:, 40:], k[:40, 40:]
    expected = (kxx.sum() - 40) / (40 * 39) + (kyy.sum() - 30) / (30 * 29) - 2 * kxy.mean()
    assert mmd2 == pytest.approx(expected, rel=1e-9)
    assert sigma == pytest.approx(
        np.median(np.sqrt(((pooled[:, None] - pooled[None]) ** 2).sum(-1))[np.triu_indices(70, 1)])
    )
    assert 1 / 100 <= p_value <= 1
    assert round(p_value * 100) == pytest.approx(p_value * 100)  # (1 + count) / 100


# --- drift decisions on real data -----------------------------------------------------


def test_two_halves_of_iris_do_not_drift_and_a_scaled_feature_does(iris: lp.data.Dataset) -> None:
    a, b = iris.split(0.5, seed=1)
    null = drift(a, b)
    assert not null.drifted
    assert null.names == iris.feature_names
    assert all(f.threshold == pytest.approx(0.05 / 4) for f in null.features)  # Bonferroni
    scaled = b.features.clone()
    scaled[:, 2] *= 1.5
    shifted = drift(a, lp.data.Dataset(scaled, b.targets, feature_names=b.feature_names))
    assert shifted.drifted_features == ["petal length (cm)"]
    text = str(shifted)
    assert text.startswith("DRIFT: 1 of 4 features drifted")
    assert "petal length (cm)" in text
    assert "yes" in text


def test_a_removed_class_drifts_the_target_column(iris: lp.data.Dataset) -> None:
    a, b = iris.split(0.5, seed=1)
    assert b.targets is not None
    without = b.subset(torch.nonzero(b.targets != 2).flatten())
    report = drift(a, without, targets=True)
    assert report["target"].kind == "categorical"
    assert report["target"].drifted
    assert report.to_dict()["drifted"] is True


def test_psi_and_wasserstein_decide_by_their_thresholds(wine: np.ndarray) -> None:
    ref, cur = wine[:89], wine[89:].copy()
    assert not drift(ref, cur, method="psi", bins=5).drifted  # same wines, other rows
    cur[:, 0] += 2 * ref[:, 0].std()
    # Wasserstein's default (0.1 reference sd) suits samples of hundreds of rows; wine's 89
    # rows differ by ~0.1-0.2 sd by chance alone, so this test gives it a threshold
    for method, given, limit in (("psi", None, 0.2), ("wasserstein", 0.5, 0.5)):
        report = drift(ref, cur, method=method, bins=5, threshold=given)
        assert report["x0"].p_value is None
        assert report["x0"].threshold == limit
        assert report.drifted_features == ["x0"], method
        assert report["x0"].scores["ks"] > 0.5  # every score is kept next to the decision


def test_mnist_halves_do_not_drift_and_fashion_mnist_does() -> None:
    mnist = lp.data.load("mnist", split="test")
    fashion = lp.data.load("fashion-mnist", split="test")
    ref, same = mnist.subset(slice(0, 150)), mnist.subset(slice(150, 300))
    null = drift(ref, same, permutations=100)
    assert [(f.name, f.method) for f in null.features] == [("features", "mmd")]
    assert not null.drifted
    mixed = torch.cat([mnist.features[300:375], fashion.features[:75]])
    assert drift(ref, mixed, permutations=100).drifted


def test_dataframes_with_categories_and_row_dicts() -> None:
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(3)
    frame = pd.DataFrame({"x": rng.normal(size=200), "c": rng.choice(["u", "v"], 200)})
    rows = [{"x": float(v), "c": "u"} for v in rng.normal(size=100)]
    report = drift(frame, rows)
    assert [(f.name, f.kind) for f in report.features] == [
        ("x", "numeric"),
        ("c", "categorical"),
    ]
    assert report.drifted_features == ["c"]


# --- windows ------------------------------------------------------------------------------


def test_tumbling_windows_flag_only_the_shifted_part(wine: np.ndarray) -> None:
    ref, rest = wine[:89], wine[89:]
    shifted = rest.copy()
    shifted[:, 6] += 3 * ref[:, 6].std()
    stream = np.concatenate([rest[:88], shifted[:88]])
    windows = list(monitor.drift_windows(ref, stream, size=44))
    assert [(w.start, w.end) for w in windows] == [(0, 44), (44, 88), (88, 132), (132, 176)]
    assert [w.drifted for w in windows] == [False, False, True, True]
    assert windows[2].report.drifted_features == ["x6"]


def test_sliding_windows_and_streaming_rows_one_at_a_time() -> None:
    rng = np.random.default_rng(0)
    window = monitor.DriftWindow(rng.normal(size=300), size=50, step=10)
    results = [
        window.update(v) for v in np.concatenate([rng.normal(size=100), rng.normal(2, 1, 60)])
    ]
    done = [r for r in results if r is not None]
    assert [r.end for r in done] == list(range(50, 161, 10))
    assert not done[0].drifted
    assert done[-1].drifted
    with pytest.raises(MonitorError, match="step must be between 1 and size"):
        monitor.DriftWindow(np.zeros(10), size=5, step=6)


# --- errors --------------------------------------------------------------------------------


def test_mismatched_empty_and_unknown_inputs_are_clear_errors(iris: lp.data.Dataset) -> None:
    x = iris.features.numpy()
    with pytest.raises(SchemaMismatchError, match="columns differ"):
        drift(x, x[:, :3])
    with pytest.raises(SchemaMismatchError, match="missing from current"):
        drift({"a": [1, 2, 3]}, {"b": [1, 2, 3]})
    with pytest.raises(SchemaMismatchError, match="images/embeddings"):
        drift(np.zeros((5, 2, 2)), np.zeros((5, 4)))
    with pytest.raises(NotEnoughDataError, match="has no rows"):
        drift(x, x[:0])
    with pytest.raises(NotEnoughDataError, match="at least 2 rows"):
        drift(x, x[:1])
    with pytest.raises(UnknownMethodError, match="no drift method 'kl'"):
        drift(x, x, method="kl")  # type: ignore[arg-type]
    with pytest.raises(UnknownMethodError, match="no anomaly detector 'lof'"):
        AnomalyDetector("lof")  # type: ignore[arg-type]
    with pytest.raises(MonitorError, match="batch detector"):
        AnomalyDetector("isolation_forest").update(1.0)
    with pytest.raises(MonitorError, match="one number at a time"):
        AnomalyDetector("adwin").update([1.0, 2.0])


# --- anomaly detectors ------------------------------------------------------------------


def test_mad_flags_an_injected_spike_and_not_the_normal_values(wine: np.ndarray) -> None:
    alcohol = wine[:, 0].copy()  # 178 wines, 11.0-14.8 % alcohol
    alcohol[120] += 6.0
    det = AnomalyDetector("mad")  # robust z past 3.5, after 30 values
    results = [det.update(v) for v in alcohol]
    assert [r.index for r in results if r.alarm] == [120]
    assert results[120].score > 3.5 > max(r.score for r in results if r.index != 120)
    batch = AnomalyDetector("mad").fit(wine[:100, 0])
    assert batch.top(alcohol, 1) == [120]
    assert batch.predict(alcohol).nonzero()[0].tolist() == [120]


def test_adwin_and_page_hinkley_detect_a_level_shift_and_stay_quiet_without_one() -> None:
    rng = np.random.default_rng(0)
    level = np.concatenate([rng.normal(0, 1, 500), rng.normal(3, 1, 500)])
    for method in ("adwin", "page_hinkley"):
        det = AnomalyDetector(method)  # type: ignore[arg-type]
        alarms = [r.index for r in map(det.update, level) if r.alarm]
        assert alarms, method
        assert 500 <= alarms[0] < 600, (method, alarms)
        quiet = AnomalyDetector(method)  # type: ignore[arg-type]
        assert not quiet.predict(rng.normal(0, 1, 1000)).any(), method


def test_isolation_forest_and_half_space_trees_rank_outliers_first(wine: np.ndarray) -> None:
    normal = wine[:150]
    outliers = wine[150:155] * 3.0  # every feature out of the normal range
    test = np.concatenate([wine[155:], outliers])
    forest = AnomalyDetector("isolation_forest").fit(normal)
    assert set(forest.top(test, 5)) == set(range(len(test) - 5, len(test)))
    assert forest.update(outliers[0]).alarm
    scores = forest.score(test)
    assert not forest.update(test[int(np.argmin(scores))]).alarm
    assert forest.predict(test)[-5:].all()
    hst = AnomalyDetector("hst", window=50, seed=0).fit(np.tile(normal, (2, 1)))
    scores = hst.score(test)
    assert scores[-5:].min() > np.median(scores[:-5])


def test_matrix_profile_matches_brute_force() -> None:
    rng = np.random.default_rng(0)
    t, ref, m = rng.normal(size=60).cumsum(), rng.normal(size=40).cumsum(), 8

    def znorm(series: np.ndarray) -> np.ndarray:
        s = monitor.subsequences(series, m)
        return (s - s.mean(1, keepdims=True)) / s.std(1, keepdims=True)

    z, zr = znorm(t), znorm(ref)
    d = np.sqrt(((z[:, None] - z[None]) ** 2).sum(-1))
    for i in range(len(d)):
        d[i, max(0, i - 1) : i + 2] = np.inf  # exclusion zone ceil(8 / 4) = 2
    np.testing.assert_allclose(matrix_profile(t, m), d.min(1), rtol=1e-9)
    ab = np.sqrt(((z[:, None] - zr[None]) ** 2).sum(-1)).min(1)
    np.testing.assert_allclose(matrix_profile(t, m, ref), ab, rtol=1e-9)


# --- the ucr-135 series -----------------------------------------------------------------


def test_ucr_file_names_give_the_split_and_the_anomaly() -> None:
    assert parse_ucr_name("135_UCR_Anomaly_InternalBleeding16_1200_4187_4199.txt") == (
        1200,
        4187,
        4199,
    )
    with pytest.raises(DataFormatError, match="not a UCR anomaly archive file name"):
        parse_ucr_name("InternalBleeding16.txt")
    with pytest.raises(DataFormatError, match="train end <= anomaly start"):
        parse_ucr_name("1_UCR_Anomaly_X_5000_4187_4199.txt")


@needs_ucr
def test_ucr_135_loads_with_its_labelled_region(tmp_path: Path) -> None:
    whole = lp.data.load("ucr-135", split="all")
    assert (len(whole), whole.train_end, whole.anomaly) == (7501, 1200, (4187, 4199))
    assert int(whole.labels.sum()) == 12
    assert [whole.hit(i) for i in (4086, 4087, 4298, 4299)] == [False, True, True, False]
    train, test = lp.data.load("ucr-135"), lp.data.load("ucr-135", split="test")
    assert (len(train), train.anomaly, len(test), test.anomaly) == (1200, None, 6301, (2987, 2999))
    np.testing.assert_array_equal(np.concatenate([train.values, test.values]), whole.values)
    ds = whole.to_dataset()
    assert (ds.classes, ds.input_shape) == (["normal", "anomaly"], (1,))
    # the archive's own text file reads the same, its region taken from the file name
    archive = tmp_path / "135_UCR_Anomaly_InternalBleeding16_1200_4187_4199.txt"
    archive.write_text("\n".join(f"{v:.5f}" for v in whole.values))
    copy = lp.data.load("ucr-135", split="all", path=tmp_path)
    assert copy.anomaly == (4187, 4199)
    np.testing.assert_array_equal(copy.values, whole.values)
    archive.write_text("\n".join(f"{v:.5f}" for v in whole.values[::-1]))
    with pytest.raises(ChecksumError, match="does not hold the published UCR series 135"):
        lp.data.load("ucr-135", path=tmp_path)
    with pytest.raises(DataSourceMissingError, match="pip install --no-deps aeon"):
        lp.data.load("ucr-135", path=tmp_path / "nowhere")


@needs_ucr
def test_the_top_discord_of_ucr_135_is_its_labelled_anomaly() -> None:
    series = lp.data.load("ucr-135", split="all")
    top = AnomalyDetector("discord", window=100).top(series.values)[0]
    assert series.hit(top)
    with pytest.raises(MonitorError, match="scores whole series"):
        AnomalyDetector("discord").update(1.0)


def test_lp_monitor_is_the_package() -> None:
    assert lp.monitor is monitor
    assert lp.monitor.drift is drift
