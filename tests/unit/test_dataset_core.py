"""Dataset: zero-copy construction, validation, batching, splits, statistics, identity."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import lepton as lp
from lepton.data import Dataset, Stats
from lepton.errors import DataFormatError, EmptyDatasetError, LabelError


def table(n: int = 100, seed: int = 0) -> Dataset:
    rng = np.random.default_rng(seed)
    x = rng.normal(5.0, 2.0, size=(n, 3)).astype(np.float32)
    y = np.arange(n) % 4
    return Dataset(x, y, name="table", feature_names=["a", "b", "c"])


def test_numpy_features_are_shared_not_copied():
    x = np.zeros((4, 2), dtype=np.float32)
    ds = Dataset(x, np.array([0, 1, 0, 1]))
    x[0, 0] = 7.0
    assert ds.features[0, 0].item() == 7.0


def test_task_is_inferred_and_labels_are_checked():
    assert Dataset(np.zeros((3, 1)), np.array([0, 1, 2])).task == "classification"
    assert Dataset(np.zeros((3, 1)), np.array([0.5, 1.0, 2.0])).task == "regression"
    assert (
        Dataset(np.zeros((3, 1)), np.array([0.0, 1.0, 1.0]), task="classification").num_classes == 2
    )
    with pytest.raises(LabelError, match="task='regression'"):
        Dataset(np.zeros((3, 1)), np.array([0.5, 1.0, 2.0]), task="classification")
    with pytest.raises(LabelError, match=r"0\.\.K-1"):
        Dataset(np.zeros((3, 1)), np.array([0, -1, 2]))
    with pytest.raises(LabelError, match="one label per sample"):
        Dataset(np.zeros((3, 1)), np.zeros((3, 2), dtype=np.int64))
    with pytest.raises(LabelError, match="class names"):
        Dataset(np.zeros((3, 1)), np.array([0, 1, 2]), classes=["a", "b"])


def test_reversed_arrays_and_float64_regression_targets():
    x = np.arange(12, dtype=np.float32).reshape(6, 2)[::-1]  # negative strides
    ds = Dataset(x, np.linspace(0.0, 1.0, 6))  # float64 targets
    assert ds.features[0].tolist() == [10.0, 11.0]
    assert ds.targets.dtype == torch.float32
    with pytest.raises(DataFormatError, match="batch_size"):
        next(ds.batches(0))


def test_bad_inputs_are_refused():
    with pytest.raises(DataFormatError, match="one target per row"):
        Dataset(np.zeros((3, 1)), np.array([0, 1]))
    with pytest.raises(DataFormatError, match="numeric"):
        Dataset(np.array([["a"], ["b"]]), np.array([0, 1]))
    with pytest.raises(EmptyDatasetError, match="no rows"):
        Dataset(np.zeros((0, 4)), np.zeros(0, dtype=np.int64))


def test_batches_cover_every_row_once_and_are_seeded():
    ds = table(103)
    seen = torch.cat(
        [yb for _, yb in ds.batches(10, shuffle=True, generator=torch.Generator().manual_seed(1))]
    )
    assert len(seen) == 103
    rows = torch.cat(
        [xb for xb, _ in ds.batches(10, shuffle=True, generator=torch.Generator().manual_seed(1))]
    )
    assert sorted(rows[:, 0].tolist()) == sorted(ds.features[:, 0].tolist())
    again = torch.cat(
        [xb for xb, _ in ds.batches(10, shuffle=True, generator=torch.Generator().manual_seed(1))]
    )
    assert torch.equal(rows, again)
    other = torch.cat(
        [xb for xb, _ in ds.batches(10, shuffle=True, generator=torch.Generator().manual_seed(2))]
    )
    assert not torch.equal(rows, other)
    assert [len(xb) for xb, _ in ds.batches(10, drop_last=True)] == [10] * 10
    first, _ = next(ds.batches(10))
    assert first.data_ptr() == ds.features.data_ptr()  # plain slices are views


def test_transform_applies_per_batch_only():
    ds = table(20).with_transform(lambda x: x * 0)
    xb, _ = next(ds.batches(5))
    assert torch.count_nonzero(xb) == 0
    assert torch.count_nonzero(ds.features) > 0
    mapped = table(20).map(lambda x: x + 1, batch_size=7)
    assert torch.allclose(mapped.features, table(20).features + 1)


def test_stratified_split_is_exact_deterministic_and_disjoint():
    x = np.arange(300, dtype=np.float32).reshape(-1, 1)
    y = np.array([0] * 200 + [1] * 70 + [2] * 30)
    ds = Dataset(x, y)
    train, test = ds.split(test_size=0.2, seed=7)
    counts = torch.bincount(test.targets).tolist()
    assert counts == [40, 14, 6]
    ids_train = set(train.features[:, 0].tolist())
    ids_test = set(test.features[:, 0].tolist())
    assert not ids_train & ids_test
    assert len(ids_train | ids_test) == 300
    again, _ = ds.split(test_size=0.2, seed=7)
    assert torch.equal(again.features, train.features)
    other, _ = ds.split(test_size=0.2, seed=8)
    assert not torch.equal(other.features, train.features)
    with pytest.raises(DataFormatError, match="test_size"):
        ds.split(test_size=1.5)
    with pytest.raises(EmptyDatasetError, match="empty"):
        Dataset(np.zeros((2, 1)), np.array([0, 1])).split(test_size=0.1)


def test_standardize_uses_training_statistics_only():
    train, test = table(400, seed=1).split(test_size=0.25, seed=0)
    test = Dataset(test.features + 10.0, test.targets)  # a shifted test set
    train_s = train.standardize()
    test_s = test.standardize(train_s.stats)
    assert torch.allclose(train_s.features.mean(0), torch.zeros(3), atol=1e-5)
    assert torch.allclose(train_s.features.std(0, unbiased=False), torch.ones(3), atol=1e-4)
    assert test_s.features.mean().item() > 3.0  # not re-centred on its own statistics
    assert train_s.preprocessing[-1]["op"] == "standardize"
    restored = Stats.from_dict(json.loads(json.dumps(train_s.stats.to_dict())))
    assert torch.allclose(restored.apply(test.features), test_s.features)


def test_normalize_axes_and_constant_features():
    images = Dataset(torch.rand(10, 3, 4, 4) * 5, torch.zeros(10, dtype=torch.int64))
    per_channel = images.normalize(axis="channel")
    assert per_channel.stats.shift.shape == (3, 1, 1)
    assert per_channel.features.amin().item() == pytest.approx(0.0, abs=1e-6)
    assert per_channel.features.amax().item() == pytest.approx(1.0, abs=1e-6)
    assert images.standardize(axis="global").stats.shift.numel() == 1
    constant = Dataset(np.ones((5, 2), dtype=np.float32), np.array([0, 1, 0, 1, 0]))
    assert torch.isfinite(constant.standardize().features).all()
    with pytest.raises(DataFormatError, match="axis='feature'"):
        table().standardize(axis="channel")


def test_fingerprint_tracks_content_not_name():
    a, b = table(), table()
    b.name = "other"
    assert (
        a.fingerprint()
        == Dataset(b.features.clone(), b.targets.clone(), name="other").fingerprint()
    )
    assert a.fingerprint().startswith("sha256:")
    assert len(a.fingerprint()) == 71
    changed = Dataset(a.features.clone(), a.targets.clone())
    changed.features[3, 1] += 1e-3
    assert changed.fingerprint() != a.fingerprint()
    relabelled = Dataset(a.features.clone(), (a.targets + 1) % 4)
    assert relabelled.fingerprint() != a.fingerprint()


def test_describe_reports_balance_and_missing_values():
    x = np.array([[1.0, np.nan], [3.0, 4.0], [5.0, 6.0]], dtype=np.float32)
    info = Dataset(
        x, np.array([0, 1, 1]), classes=["no", "yes"], feature_names=["p", "q"]
    ).describe()
    assert info["rows"] == 3
    assert info["missing"] == 1
    assert info["class_counts"] == {"no": 1, "yes": 2}
    assert info["features"]["p"] == {
        "mean": 3.0,
        "std": pytest.approx(1.632993, abs=1e-5),
        "min": 1.0,
        "max": 5.0,
    }
    assert info["features"]["q"]["mean"] == 5.0
    json.dumps(info)


def test_save_round_trips_through_npz(tmp_path: Path):
    ds = table()
    path = ds.save(tmp_path / "table.npz")
    back = lp.data.from_npz(path)
    assert torch.equal(back.features, ds.features)
    assert torch.equal(back.targets, ds.targets)
    assert (back.name, back.feature_names, back.classes) == ("table", ["a", "b", "c"], ds.classes)
    assert [p.name for p in tmp_path.iterdir()] == ["table.npz"]
