"""clean() on small tables with known problems, and apply_preprocessing() replays."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lepton.data import CleanReport, Dataset, apply_preprocessing, clean
from lepton.errors import DataFormatError

NAN = np.nan


def messy() -> Dataset:
    """9 rows: 2 duplicates (one of them with a NaN), a NaN in each column, one outlier."""
    x = np.array(
        [
            [1, 10],
            [2, NAN],
            [1, 10],  # duplicate of row 0
            [3, 20],
            [NAN, 30],
            [4, 40],
            [100, 50],  # outlier in "a"
            [5, 60],
            [2, NAN],  # duplicate of row 1 (NaN in the same place)
        ],
        dtype=np.float32,
    )
    y = np.array([0, 1, 0, 1, 0, 1, 0, 1, 1])
    return Dataset(x, y, name="messy", feature_names=["a", "b"])


# --- what clean() changes, counted in its report ---


def test_report_counts_are_exact() -> None:
    out, report = clean(messy(), clip_outliers=1.5)
    assert report.rows_in == 9
    assert report.rows_out == 7
    assert len(out) == 7
    assert report.duplicates_dropped == 2
    assert report.missing_targets_dropped == 0
    assert report.imputed == {"a": 1, "b": 1}
    assert report.clipped == {"a": 1}
    assert report.invalid_labels == []
    json.dumps(report.to_dict())


def test_report_reads_well() -> None:
    _, report = clean(messy(), clip_outliers=1.5)
    text = str(report)
    lines = text.splitlines()
    assert lines[0] == "rows in 9, rows out 7"
    assert "duplicates dropped       2" in text
    assert "values imputed           2  (a: 1, b: 1)" in text
    assert "values clipped           1  (a: 1)" in text
    noted = CleanReport(rows_in=3, rows_out=3, invalid_labels=["class 'x' has no samples"])
    assert str(noted).endswith("label problem: class 'x' has no samples")


def test_median_imputation_and_iqr_clipping_values() -> None:
    out, _ = clean(messy(), clip_outliers=1.5)
    # a: median of [1, 2, 3, 4, 100, 5] = 3.5; after imputing, Q1 = 2.5, Q3 = 4.5 -> high 7.5
    # b: median of [10, 20, 30, 40, 50, 60] = 35; Q1 = 25, Q3 = 45 -> [-5, 75], nothing clipped
    expected = [[1, 10], [2, 35], [3, 20], [3.5, 30], [4, 40], [7.5, 50], [5, 60]]
    assert out.features.tolist() == expected
    assert out.targets is not None
    assert out.targets.tolist() == [0, 1, 1, 0, 1, 0, 1]
    assert out.preprocessing == [
        {"op": "impute", "strategy": "median", "values": [3.5, 35.0]},
        {"op": "clip", "k": 1.5, "low": [-0.5, -5.0], "high": [7.5, 75.0]},
    ]


def test_clean_leaves_the_input_alone() -> None:
    ds = messy()
    before = ds.features.clone()
    clean(ds, clip_outliers=1.5)
    assert torch.equal(torch.isnan(ds.features), torch.isnan(before))
    assert torch.equal(torch.nan_to_num(ds.features), torch.nan_to_num(before))


def test_mean_imputation() -> None:
    out, report = clean(messy(), impute="mean", drop_duplicates=False)
    assert report.imputed == {"a": 1, "b": 2}
    a_mean = (1 + 2 + 1 + 3 + 4 + 100 + 5 + 2) / 8
    assert out.features[4, 0].item() == pytest.approx(a_mean)
    assert out.features[1, 1].item() == pytest.approx((10 + 10 + 20 + 30 + 40 + 50 + 60) / 7)


def test_most_frequent_imputation() -> None:
    x = np.array([[7, 1], [7, 2], [3, 2], [NAN, NAN], [9, 5]], dtype=np.float32)
    out, report = clean(Dataset(x), impute="most_frequent")
    assert report.imputed == {"x0": 1, "x1": 1}
    assert out.features[3].tolist() == [7.0, 2.0]


def test_no_imputation_leaves_nans() -> None:
    out, report = clean(messy(), impute=None)
    assert report.imputed == {}
    assert int(torch.isnan(out.features).sum()) == 2
    assert out.preprocessing == []


def test_duplicates_with_missing_values_are_found_without_imputation() -> None:
    x = np.array([[1.0, NAN], [1.0, NAN], [1.0, 2.0]], dtype=np.float32)
    _, report = clean(Dataset(x, np.array([0, 0, 1])), impute=None)
    assert report.duplicates_dropped == 1


def test_regression_rows_with_missing_target_are_dropped() -> None:
    x = np.array([[1, 2], [3, 4], [5, 6], [7, 8]], dtype=np.float32)
    y = np.array([0.5, NAN, 1.5, NAN], dtype=np.float32)
    out, report = clean(Dataset(x, y))
    assert report.missing_targets_dropped == 2
    assert report.rows_out == 2
    assert out.features.tolist() == [[1, 2], [5, 6]]
    assert out.targets is not None
    assert out.targets.tolist() == [0.5, 1.5]
    kept, report = clean(Dataset(x, y), drop_missing_targets=False, drop_duplicates=False)
    assert report.missing_targets_dropped == 0
    assert len(kept) == 4


# --- label problems and refusals ---


def test_conflicting_labels_are_reported() -> None:
    x = np.array([[1, 1], [1, 1], [2, 2], [2, 2], [3, 3]], dtype=np.float32)
    y = np.array([0, 1, 1, 0, 1])
    _out, report = clean(Dataset(x, y))
    assert report.duplicates_dropped == 0
    assert report.invalid_labels == [
        "2 rows repeat the features of another row with a different label"
    ]
    _, quiet = clean(Dataset(x, y), validate_labels=False)
    assert quiet.invalid_labels == []


def test_single_sample_and_empty_classes_are_reported() -> None:
    x = np.arange(8, dtype=np.float32).reshape(4, 2)
    ds = Dataset(x, np.array([0, 0, 0, 1]), classes=["cat", "dog", "emu"])
    _, report = clean(ds)
    assert report.invalid_labels == [
        "class 'emu' has no samples",
        "class 'dog' has a single sample (a stratified split needs at least 2)",
    ]


def test_images_are_refused() -> None:
    with pytest.raises(DataFormatError, match=r"tabular data.*use standardize\(\)/normalize\(\)"):
        clean(Dataset(np.zeros((4, 1, 2, 2), dtype=np.float32)))


# --- apply_preprocessing() replays the recorded steps ---


def test_apply_preprocessing_replays_train_steps_exactly() -> None:
    train, _ = clean(messy(), clip_outliers=1.5)
    train = train.standardize()
    assert [s["op"] for s in train.preprocessing] == ["impute", "clip", "standardize"]
    test = Dataset(
        np.array([[NAN, 70], [50, NAN], [2, -100]], dtype=np.float32),
        np.array([0, 1, 0]),
        feature_names=["a", "b"],
    )
    replayed = apply_preprocessing(test, train.preprocessing)

    cleaned_train = torch.tensor(
        [[1, 10], [2, 35], [3, 20], [3.5, 30], [4, 40], [7.5, 50], [5, 60]]
    )
    mean = cleaned_train.mean(0)
    std = cleaned_train.std(0, unbiased=False)
    # impute (3.5, 35), then clip a to [-0.5, 7.5] and b to [-5, 75]
    before_scaling = torch.tensor([[3.5, 70], [7.5, 35], [2, -5]])
    expected = (before_scaling - mean) / std
    assert torch.allclose(replayed.features, expected, atol=1e-5)
    assert replayed.stats is not None
    assert torch.allclose(replayed.stats.shift, mean)
    assert replayed.preprocessing == train.preprocessing
    assert torch.equal(replayed.targets, test.targets)  # type: ignore[arg-type]


def test_apply_preprocessing_replays_minmax() -> None:
    train = Dataset(np.array([[0, 10], [4, 30]], dtype=np.float32)).normalize()
    other = apply_preprocessing(
        Dataset(np.array([[2, 20], [8, 50]], dtype=np.float32)), train.preprocessing
    )
    assert other.features.tolist() == [[0.5, 0.5], [2.0, 2.0]]


def test_unknown_step_is_refused() -> None:
    with pytest.raises(DataFormatError, match=r"unknown preprocessing step 'log'; known: impute"):
        apply_preprocessing(messy(), [{"op": "log"}])
