"""Dataset: construction, validation, subsets, batches, splits, scaling and identity."""

from __future__ import annotations

import gc
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from lepton.data import Dataset, Stats, from_npz
from lepton.errors import DataFormatError, EmptyDatasetError, LabelError


def tabular(n: int = 120, seed: int = 0, classes: int = 3) -> Dataset:
    rng = np.random.default_rng(seed)
    x = rng.normal(5.0, 2.0, size=(n, 4)).astype(np.float32)
    y = np.arange(n) % classes
    return Dataset(x, y, name="tab", feature_names=["a", "b", "c", "d"])


# -- construction ------------------------------------------------------------------------
def test_features_are_zero_copy_views_of_the_numpy_array() -> None:
    x = np.zeros((5, 3), dtype=np.float32)
    ds = Dataset(x, np.array([0, 1, 0, 1, 0]))
    x[2, 1] = 42.0
    assert ds.features[2, 1].item() == 42.0
    assert np.shares_memory(ds.features.numpy(), x)


def test_read_only_arrays_are_copied_so_the_dataset_stays_writable() -> None:
    x = np.arange(6, dtype=np.float32).reshape(3, 2)
    x.flags.writeable = False
    ds = Dataset(x)
    ds.features[0, 0] = -1.0
    assert x[0, 0] == 0.0


def test_read_only_memmaps_are_remapped_copy_on_write_not_loaded(tmp_path: Path) -> None:
    path = tmp_path / "big.npy"
    data = np.arange(400, dtype=np.float32).reshape(100, 4)
    np.save(path, data)
    mm = np.load(path, mmap_mode="r")
    ds = Dataset(mm)
    del mm
    gc.collect()
    assert str(path) in Path("/proc/self/maps").read_text()  # still mapped, not copied
    ds.features[0, 0] = -5.0
    assert np.load(path)[0, 0] == 0.0  # copy-on-write


def test_memmap_slices_keep_their_own_rows(tmp_path: Path) -> None:
    path = tmp_path / "m.npy"
    data = np.arange(40, dtype=np.float32).reshape(10, 4)
    np.save(path, data)
    mm = np.load(path, mmap_mode="r")
    for view, expected in ((mm[3:], data[3:]), (mm[:2], data[:2]), (mm[::3], data[::3])):
        assert np.array_equal(Dataset(view).features.numpy(), expected)


def test_reversed_arrays_and_float64_regression_targets() -> None:
    x = np.arange(12, dtype=np.float32).reshape(6, 2)[::-1]  # negative strides
    ds = Dataset(x, np.linspace(0.0, 1.0, 6))  # float64 targets
    assert ds.features[0].tolist() == [10.0, 11.0]
    assert ds.targets is not None
    assert ds.targets.dtype == torch.float32


def test_integer_targets_mean_classification_and_floats_regression() -> None:
    cls = Dataset(np.zeros((4, 2)), np.array([0, 2, 1, 2], dtype=np.int32))
    assert cls.task == "classification"
    assert cls.targets is not None
    assert cls.targets.dtype == torch.int64
    assert cls.classes == ["0", "1", "2"]
    reg = Dataset(np.zeros((3, 2)), np.array([0.5, 1.5, -2.0]))
    assert reg.task == "regression"
    assert reg.classes is None
    assert reg.num_classes is None
    assert Dataset(np.zeros((3, 2))).task is None


def test_integral_float_labels_are_accepted_for_classification() -> None:
    ds = Dataset(np.zeros((3, 1)), np.array([0.0, 1.0, 1.0]), task="classification")
    assert ds.targets is not None
    assert ds.targets.tolist() == [0, 1, 1]
    assert ds.num_classes == 2


def test_non_integer_float_labels_for_classification_are_refused() -> None:
    with pytest.raises(LabelError, match=r"non-integer floats; pass task='regression'"):
        Dataset(np.zeros((3, 1)), np.array([0.5, 1.0, 2.0]), task="classification")


def test_nan_labels_for_classification_are_refused() -> None:
    with pytest.raises(
        LabelError, match=r"non-integer floats; pass task='regression', or encode class labels"
    ):
        Dataset(np.zeros((2, 1)), np.array([0.0, np.nan]), task="classification")


def test_negative_labels_are_refused_with_a_way_out() -> None:
    with pytest.raises(LabelError, match=r"negative class -1; encode class labels as 0\.\.K-1"):
        Dataset(np.zeros((3, 1)), np.array([0, -1, 2]))


def test_two_dimensional_classification_targets_are_refused() -> None:
    with pytest.raises(LabelError, match=r"one label per sample \(N,\), got shape \(3, 2\)"):
        Dataset(np.zeros((3, 1)), np.zeros((3, 2), dtype=np.int64))
    # ... but are fine as multi-output regression, as the message suggests
    multi = Dataset(np.zeros((3, 1)), np.zeros((3, 2), dtype=np.int64), task="regression")
    assert multi.targets is not None
    assert multi.targets.dtype == torch.float32


def test_too_few_class_names_are_refused() -> None:
    with pytest.raises(
        LabelError, match="has label 2 but only 2 class names; pass one name per class"
    ):
        Dataset(np.zeros((3, 1)), np.array([0, 1, 2]), classes=["a", "b"])


def test_mismatched_lengths_are_a_format_error() -> None:
    with pytest.raises(DataFormatError, match=r"4 feature rows but 3 targets.*one target per row"):
        Dataset(np.zeros((4, 2)), np.array([0, 1, 0]))


@pytest.mark.parametrize(
    "features",
    [np.array([["a", "b"], ["c", "d"]]), np.array([[1, None], [2, 3]], dtype=object)],
    ids=["strings", "objects"],
)
def test_string_and_object_features_are_refused(features: np.ndarray) -> None:
    with pytest.raises(DataFormatError, match=r"must be numeric.*encode strings first"):
        Dataset(features)


def test_string_targets_are_refused() -> None:
    with pytest.raises(LabelError, match=r"targets must be numeric.*0\.\.K-1"):
        Dataset(np.zeros((2, 1)), np.array(["cat", "dog"]))


def test_zero_rows_is_an_empty_dataset_error() -> None:
    with pytest.raises(EmptyDatasetError, match="has no rows; check the file or filter"):
        Dataset(np.zeros((0, 3), dtype=np.float32), np.zeros(0, dtype=np.int64))


def test_basics_len_getitem_input_shape_repr() -> None:
    ds = tabular(10)
    assert len(ds) == 10
    assert ds.input_shape == (4,)
    x, y = ds[3]
    assert torch.equal(x, ds.features[3])
    assert int(y) == 0
    assert "rows=10" in repr(ds)
    assert "classes=3" in repr(ds)


# -- subsets and batches -----------------------------------------------------------------
def test_subset_with_slice_shares_memory() -> None:
    ds = tabular(20)
    part = ds.subset(slice(5, 10))
    assert len(part) == 5
    assert torch.equal(part.features, ds.features[5:10])
    ds.features[5, 0] = 1234.0
    assert part.features[0, 0].item() == 1234.0


@pytest.mark.parametrize("kind", ["list", "tensor"])
def test_subset_with_indices(kind: str) -> None:
    ds = tabular(20)
    rows = [7, 1, 19]
    idx = rows if kind == "list" else torch.tensor(rows)
    part = ds.subset(idx)
    assert torch.equal(part.features, ds.features[rows])
    assert part.targets is not None
    assert part.targets.tolist() == [1, 1, 1]
    assert part.classes == ds.classes
    assert part.feature_names == ds.feature_names


def test_shuffled_batches_cover_every_row_exactly_once() -> None:
    n = 103
    ds = Dataset(np.arange(n, dtype=np.float32)[:, None], np.arange(n) % 2)
    seen = [
        int(v)
        for xb, _ in ds.batches(10, shuffle=True, generator=torch.Generator().manual_seed(1))
        for v in xb[:, 0]
    ]
    assert sorted(seen) == list(range(n))
    assert seen != list(range(n))  # actually shuffled


def test_batches_keep_features_and_targets_aligned() -> None:
    ds = Dataset(np.arange(50, dtype=np.float32)[:, None], np.arange(50) % 7)
    batches = list(ds.batches(8, shuffle=True, generator=torch.Generator().manual_seed(3)))
    assert len(batches) == 7
    for xb, yb in batches:
        assert yb is not None
        assert torch.equal(xb[:, 0].long() % 7, yb)


def test_seeded_shuffles_are_deterministic() -> None:
    ds = Dataset(np.arange(40, dtype=np.float32)[:, None])

    def order(seed: int) -> list[float]:
        gen = torch.Generator().manual_seed(seed)
        return [
            v for xb, _ in ds.batches(7, shuffle=True, generator=gen) for v in xb[:, 0].tolist()
        ]

    assert order(5) == order(5)
    assert order(5) != order(6)


def test_drop_last_drops_the_partial_batch() -> None:
    ds = Dataset(np.zeros((23, 2), dtype=np.float32))
    sizes = [len(xb) for xb, _ in ds.batches(5, drop_last=True)]
    assert sizes == [5, 5, 5, 5]
    assert [len(xb) for xb, _ in ds.batches(5)] == [5, 5, 5, 5, 3]
    shuffled = [len(xb) for xb, _ in ds.batches(5, shuffle=True, drop_last=True)]
    assert shuffled == [5, 5, 5, 5]


def test_batch_size_must_be_positive() -> None:
    with pytest.raises(DataFormatError, match="batch_size must be a positive integer, got 0"):
        next(tabular(10).batches(0))


def test_unlabelled_batches_yield_none_targets() -> None:
    ds = Dataset(np.zeros((4, 2), dtype=np.float32))
    assert [yb for _, yb in ds.batches(3)] == [None, None]


def test_transform_is_applied_per_batch_not_to_the_stored_features() -> None:
    calls: list[int] = []

    def double(xb: torch.Tensor) -> torch.Tensor:
        calls.append(len(xb))
        return xb * 2

    ds = Dataset(np.ones((10, 2), dtype=np.float32)).with_transform(double)
    batches = [xb for xb, _ in ds.batches(4)]
    assert calls == [4, 4, 2]
    assert all(torch.all(xb == 2) for xb in batches)
    assert torch.all(ds.features == 1)
    assert ds.with_transform(None).transform is None


def test_unshuffled_batches_are_views_of_the_features() -> None:
    ds = tabular(30)
    xb, yb = next(ds.batches(8))
    assert np.shares_memory(xb.numpy(), ds.features.numpy())
    assert yb is not None
    assert ds.targets is not None
    assert np.shares_memory(yb.numpy(), ds.targets.numpy())


# -- split -------------------------------------------------------------------------------
def test_split_is_stratified_within_one_per_class() -> None:
    y = np.array([0] * 50 + [1] * 30 + [2] * 17)
    ds = Dataset(np.random.default_rng(0).normal(size=(len(y), 2)), y)
    train, test = ds.split(test_size=0.25, seed=0)
    assert test.targets is not None
    assert train.targets is not None
    counts = torch.bincount(test.targets, minlength=3).tolist()
    for c, expected in zip(counts, (50 * 0.25, 30 * 0.25, 17 * 0.25), strict=True):
        assert abs(c - expected) <= 1
    assert (torch.bincount(train.targets, minlength=3) + torch.bincount(test.targets)).tolist() == [
        50,
        30,
        17,
    ]


def test_split_is_exact_when_every_class_divides_evenly() -> None:
    y = np.array([0] * 200 + [1] * 70 + [2] * 30)
    ds = Dataset(np.arange(300, dtype=np.float32)[:, None], y)
    _, test = ds.split(test_size=0.2, seed=7)
    assert test.targets is not None
    assert torch.bincount(test.targets).tolist() == [40, 14, 6]


def test_split_is_disjoint_complete_and_deterministic() -> None:
    n = 97
    ds = Dataset(np.arange(n, dtype=np.float32)[:, None], np.arange(n) % 3)
    train, test = ds.split(test_size=0.3, seed=11)
    tr = set(train.features[:, 0].long().tolist())
    te = set(test.features[:, 0].long().tolist())
    assert tr.isdisjoint(te)
    assert tr | te == set(range(n))
    again_train, again_test = ds.split(test_size=0.3, seed=11)
    assert torch.equal(again_test.features, test.features)
    assert torch.equal(again_train.features, train.features)
    _, other = ds.split(test_size=0.3, seed=12)
    assert not torch.equal(other.features, test.features)


def test_regression_split_is_random_not_stratified() -> None:
    ds = Dataset(np.arange(50, dtype=np.float32)[:, None], np.linspace(0, 1, 50))
    train, test = ds.split(test_size=0.2, seed=0)
    assert (len(train), len(test)) == (40, 10)
    with pytest.raises(
        LabelError, match="stratify=True needs classification targets; pass stratify=False"
    ):
        ds.split(stratify=True)


def test_split_that_leaves_a_part_empty_is_refused() -> None:
    ds = Dataset(np.zeros((2, 1), dtype=np.float32), np.array([0, 1]))
    with pytest.raises(EmptyDatasetError, match="leaves one part empty; use more data"):
        ds.split(test_size=0.2)


@pytest.mark.parametrize("bad", [0.0, 1.0, -0.1, 1.5])
def test_split_refuses_test_size_outside_zero_one(bad: float) -> None:
    with pytest.raises(DataFormatError, match=r"test_size must be in \(0, 1\).*e\.g\. 0\.2"):
        tabular(10).split(test_size=bad)


# -- standardize / normalize -------------------------------------------------------------
def test_standardize_uses_train_statistics_only() -> None:
    rng = np.random.default_rng(0)
    train = Dataset(rng.normal(5.0, 2.0, size=(400, 3)).astype(np.float32))
    test = Dataset(rng.normal(9.0, 2.0, size=(100, 3)).astype(np.float32))
    train_z = train.standardize()
    assert torch.allclose(train_z.features.mean(0), torch.zeros(3), atol=1e-5)
    assert torch.allclose(train_z.features.std(0, unbiased=False), torch.ones(3), atol=1e-4)
    assert train_z.stats is not None
    test_z = test.standardize(train_z.stats)
    mean = train.features.mean(0)
    std = train.features.std(0, unbiased=False)
    expected = (test.features.mean(0) - mean) / std
    assert torch.allclose(test_z.features.mean(0), expected, atol=1e-4)
    assert torch.all(test_z.features.mean(0) > 1.5)  # NOT re-centred on the test data
    assert abs(float(train.features.mean()) - 5.0) < 0.5  # the original is not changed


def test_standardize_appends_a_replayable_record() -> None:
    ds = tabular(50)
    z = ds.standardize()
    assert ds.preprocessing == []
    assert len(z.preprocessing) == 1
    record = z.preprocessing[0]
    assert record["op"] == "standardize"
    assert record["axis"] == "feature"
    assert record["shape"] == [4]
    assert len(record["shift"]) == 4
    twice = z.normalize()
    assert [p["op"] for p in twice.preprocessing] == ["standardize", "minmax"]


def test_stats_round_trip_through_json() -> None:
    z = tabular(50).standardize()
    assert z.stats is not None
    raw = json.loads(json.dumps(z.stats.to_dict()))
    back = Stats.from_dict(raw)
    assert back.kind == "standardize"
    assert back.axis == "feature"
    assert torch.equal(back.shift, z.stats.shift)
    assert torch.equal(back.scale, z.stats.scale)
    x = torch.randn(5, 4)
    assert torch.equal(back.apply(x), z.stats.apply(x))


def test_normalize_maps_train_to_unit_range_per_feature() -> None:
    ds = Dataset(np.array([[0, 10], [5, 20], [10, 30]], dtype=np.float32))
    n = ds.normalize()
    assert torch.allclose(n.features, torch.tensor([[0, 0], [0.5, 0.5], [1, 1]]))
    other = Dataset(np.array([[20, 40]], dtype=np.float32)).normalize(n.stats)
    assert torch.allclose(other.features, torch.tensor([[2.0, 1.5]]))


def test_channel_axis_standardizes_each_image_channel() -> None:
    rng = np.random.default_rng(0)
    x = np.stack([rng.normal(0, 1, (20, 6, 6)), rng.normal(100, 10, (20, 6, 6))], axis=1).astype(
        np.float32
    )  # (N, C, H, W)
    z = Dataset(x).standardize(axis="channel")
    assert z.stats is not None
    assert tuple(z.stats.shift.shape) == (2, 1, 1)
    per_channel = z.features.transpose(0, 1).reshape(2, -1)
    assert torch.allclose(per_channel.mean(1), torch.zeros(2), atol=1e-4)
    assert torch.allclose(per_channel.std(1, unbiased=False), torch.ones(2), atol=1e-3)


def test_channel_axis_normalizes_each_image_channel_to_unit_range() -> None:
    images = Dataset(torch.rand(10, 3, 4, 4) * 5, torch.zeros(10, dtype=torch.int64))
    per_channel = images.normalize(axis="channel")
    assert per_channel.stats is not None
    assert tuple(per_channel.stats.shift.shape) == (3, 1, 1)
    by_channel = per_channel.features.transpose(0, 1).reshape(3, -1)
    assert torch.allclose(by_channel.amin(1), torch.zeros(3), atol=1e-6)
    assert torch.allclose(by_channel.amax(1), torch.ones(3), atol=1e-6)


def test_channel_axis_needs_images() -> None:
    with pytest.raises(DataFormatError, match="use axis='feature' for tabular data"):
        tabular(10).standardize(axis="channel")


def test_global_axis_uses_one_value() -> None:
    x = np.array([[0, 2], [4, 6]], dtype=np.float32)
    ds = Dataset(x).standardize(axis="global")
    assert ds.stats is not None
    assert ds.stats.shift.numel() == 1
    assert float(ds.stats.shift) == pytest.approx(3.0)
    assert float(ds.features.mean()) == pytest.approx(0.0, abs=1e-6)
    assert float(ds.features.std(unbiased=False)) == pytest.approx(1.0, abs=1e-6)
    mm = Dataset(x).normalize(axis="global")
    assert mm.features.min().item() == 0.0
    assert mm.features.max().item() == 1.0


def test_zero_variance_feature_gives_finite_values() -> None:
    x = np.array([[1, 3], [2, 3], [3, 3]], dtype=np.float32)
    for scaled in (Dataset(x).standardize(), Dataset(x).normalize()):
        assert torch.isfinite(scaled.features).all()
        assert torch.all(scaled.features[:, 1] == 0)


def test_stats_for_another_layout_are_refused() -> None:
    stats = Dataset(np.zeros((4, 2, 3, 3), dtype=np.float32)).standardize(axis="channel").stats
    assert stats is not None
    with pytest.raises(DataFormatError, match="compute them on data of the same layout"):
        tabular(10).standardize(stats)


# -- map / with_transform ----------------------------------------------------------------
def test_map_applies_now_in_chunks_and_keeps_metadata() -> None:
    ds = tabular(10)
    sizes: list[int] = []

    def plus_one(xb: torch.Tensor) -> torch.Tensor:
        sizes.append(len(xb))
        return xb + 1

    mapped = ds.map(plus_one, batch_size=4)
    assert sizes == [4, 4, 2]
    assert torch.equal(mapped.features, ds.features + 1)
    assert torch.equal(mapped.targets, ds.targets)  # type: ignore[arg-type]
    assert mapped.feature_names == ds.feature_names
    assert mapped.classes == ds.classes


def test_with_transform_is_lazy_and_survives_subsets() -> None:
    ds = tabular(10).with_transform(lambda xb: xb * 0)
    assert not torch.all(ds.features == 0)
    part = ds.subset(slice(0, 4))
    xb, _ = next(part.batches(4))
    assert torch.all(xb == 0)


# -- fingerprint / describe / save -------------------------------------------------------
def test_fingerprint_is_content_based() -> None:
    x = np.random.default_rng(0).normal(size=(20, 3)).astype(np.float32)
    y = np.arange(20) % 2
    fp = Dataset(x, y, name="one").fingerprint()
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", fp)
    assert Dataset(x.copy(), y.copy(), name="two").fingerprint() == fp
    changed = x.copy()
    changed[7, 1] += 1e-3
    assert Dataset(changed, y).fingerprint() != fp
    relabelled = y.copy()
    relabelled[0] = 1 - relabelled[0]
    assert Dataset(x, relabelled).fingerprint() != fp
    assert Dataset(x, y, classes=["neg", "pos"]).fingerprint() != fp
    assert Dataset(x).fingerprint() != fp


def test_describe_reports_rows_classes_missing_and_feature_stats() -> None:
    x = np.array([[1, 10], [2, np.nan], [3, 30], [np.nan, 40]], dtype=np.float32)
    ds = Dataset(x, np.array([0, 1, 1, 1]), classes=["no", "yes"], feature_names=["u", "v"])
    d = ds.describe()
    json.dumps(d)
    assert d["rows"] == 4
    assert d["input_shape"] == [2]
    assert d["task"] == "classification"
    assert d["num_classes"] == 2
    assert d["class_counts"] == {"no": 1, "yes": 3}
    assert d["missing"] == 2
    assert d["features"]["u"] == {"mean": 2.0, "std": pytest.approx(0.816497), "min": 1, "max": 3}
    assert d["features"]["v"]["mean"] == pytest.approx(80 / 3, abs=1e-4)
    assert d["features"]["v"]["min"] == 10
    assert d["features"]["v"]["max"] == 40
    assert d["fingerprint"] == ds.fingerprint()


def test_describe_summarises_images_as_a_whole() -> None:
    d = Dataset(np.full((3, 1, 4, 4), 0.5, dtype=np.float32)).describe()
    assert d["features"] == {"all": {"mean": 0.5, "std": 0.0, "min": 0.5, "max": 0.5}}
    assert d["num_classes"] is None
    assert "class_counts" not in d


def test_save_and_from_npz_round_trip(tmp_path: Path) -> None:
    ds = tabular(30).standardize()
    path = ds.save(tmp_path / "tab.npz")
    back = from_npz(path)
    assert torch.equal(back.features, ds.features)
    assert torch.equal(back.targets, ds.targets)  # type: ignore[arg-type]
    assert back.name == "tab"
    assert back.task == "classification"
    assert back.classes == ds.classes
    assert back.feature_names == ds.feature_names
    assert back.preprocessing == ds.preprocessing
    assert back.fingerprint() == ds.fingerprint()
    assert [p.name for p in tmp_path.iterdir()] == ["tab.npz"]  # no temporary file left


def test_save_unlabelled_regression_round_trip(tmp_path: Path) -> None:
    reg = Dataset(np.ones((3, 2), dtype=np.float32), np.array([0.5, 1.5, 2.5]), name="r")
    back = from_npz(reg.save(tmp_path / "r.npz"))
    assert back.task == "regression"
    assert torch.equal(back.targets, reg.targets)  # type: ignore[arg-type]
    bare = from_npz(Dataset(np.ones((3, 2), dtype=np.float32)).save(tmp_path / "b.npz"))
    assert bare.targets is None
    assert bare.task is None
