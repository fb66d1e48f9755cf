"""clean(): exact counts in the report, and replay of the recorded steps on new data."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import lepton as lp
from lepton.data import Dataset
from lepton.errors import DataFormatError

NAN = np.nan


def messy() -> Dataset:
    x = np.array(
        [
            [1.0, 10.0],
            [2.0, NAN],  # missing b
            [1.0, 10.0],  # duplicate of row 0 (same label)
            [3.0, 12.0],
            [NAN, 14.0],  # missing a
            [4.0, 11.0],
            [2.5, 500.0],  # outlier in b
            [3.5, 13.0],
        ],
        dtype=np.float32,
    )
    y = np.array([0, 1, 0, 1, 0, 1, 0, 1])
    return Dataset(x, y, name="messy", feature_names=["a", "b"])


def test_report_counts_every_change():
    cleaned, report = lp.data.clean(messy(), impute="median", clip_outliers=1.5)
    assert report.rows_in == 8
    assert report.rows_out == 7
    assert report.duplicates_dropped == 1
    assert report.imputed == {"a": 1, "b": 1}
    assert report.clipped == {"b": 1}
    assert not torch.isnan(cleaned.features).any()
    # median of a over the 7 kept rows without NaN: [1, 2, 3, 4, 2.5, 3.5] -> 2.75
    assert cleaned.features[3, 0].item() == pytest.approx(2.75)
    assert cleaned.features[:, 1].max().item() < 500
    assert [step["op"] for step in cleaned.preprocessing] == ["impute", "clip"]
    json.dumps(report.to_dict())
    assert "duplicates dropped       1" in str(report)


@pytest.mark.parametrize(("strategy", "expected"), [("mean", 2.5), ("most_frequent", 1.0)])
def test_impute_strategies(strategy, expected):
    x = np.array([[1.0], [1.0], [5.5], [NAN]], dtype=np.float32)
    cleaned, _ = lp.data.clean(
        Dataset(x, np.array([0, 1, 0, 1])), impute=strategy, drop_duplicates=False
    )
    assert cleaned.features[3, 0].item() == pytest.approx(expected)


def test_duplicates_with_missing_values_are_found():
    x = np.array([[1.0, NAN], [1.0, NAN], [1.0, 2.0]], dtype=np.float32)
    _, report = lp.data.clean(Dataset(x, np.array([0, 0, 1])), impute=None)
    assert report.duplicates_dropped == 1


def test_regression_rows_without_target_are_dropped():
    x = np.arange(8, dtype=np.float32).reshape(4, 2)
    ds = Dataset(x, np.array([1.0, NAN, 3.0, 4.0], dtype=np.float32))
    cleaned, report = lp.data.clean(ds)
    assert report.missing_targets_dropped == 1
    assert cleaned.targets.tolist() == [1.0, 3.0, 4.0]


def test_label_problems_are_reported():
    x = np.array([[1.0], [1.0], [2.0], [3.0]], dtype=np.float32)
    ds = Dataset(x, np.array([0, 1, 0, 0]), classes=["a", "b", "c"])
    _, report = lp.data.clean(ds)
    text = " | ".join(report.invalid_labels)
    assert "different label" in text
    assert "'b' has a single sample" in text
    assert "'c' has no samples" in text


def test_images_are_refused():
    with pytest.raises(DataFormatError, match="tabular"):
        lp.data.clean(Dataset(torch.zeros(4, 1, 2, 2), np.array([0, 1, 0, 1])))


def test_recorded_steps_replay_on_test_data():
    train, _ = lp.data.clean(messy(), clip_outliers=1.5)
    train = train.standardize()
    test = Dataset(np.array([[NAN, 1000.0], [2.0, 11.0]], dtype=np.float32), np.array([0, 1]))
    replayed = lp.data.apply_preprocessing(test, train.preprocessing)
    impute, clip, standardize = train.preprocessing
    a = (impute["values"][0] - standardize["shift"][0]) / standardize["scale"][0]
    b = (clip["high"][1] - standardize["shift"][1]) / standardize["scale"][1]
    assert replayed.features[0].tolist() == pytest.approx([a, b], rel=1e-5)
    assert replayed.stats is not None
    with pytest.raises(DataFormatError, match="unknown preprocessing step"):
        lp.data.apply_preprocessing(test, [{"op": "rotate"}])
