"""The real packaged datasets: sizes, ranges and class balance match the published ones."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import lepton as lp

pytestmark = pytest.mark.integration

MNIST_TEST_COUNTS = {"0": 980, "1": 1135, "2": 1032, "3": 1010, "4": 982,
                     "5": 892, "6": 958, "7": 1028, "8": 974, "9": 1009}  # fmt: skip


def test_mnist_is_the_real_mnist() -> None:
    train = lp.data.load("mnist", split="train")
    test = lp.data.load("mnist", split="test")
    assert train.features.shape == (60000, 1, 28, 28)
    assert test.features.shape == (10000, 1, 28, 28)
    assert train.features.dtype == torch.float32
    assert float(train.features.min()) == 0.0
    assert float(train.features.max()) == 1.0
    assert test.describe()["class_counts"] == MNIST_TEST_COUNTS
    assert lp.data.load("mnist", split="test").fingerprint() == test.fingerprint()
    assert len(lp.data.load("mnist", split="all")) == 70000


@pytest.mark.skipif(
    not Path("/usr/share/datasets/fashion-mnist").exists(),
    reason="Debian dataset-fashion-mnist is not installed (the set-up script installs it as root)",
)
def test_fashion_mnist() -> None:
    test = lp.data.load("fashion-mnist", split="test")
    assert test.features.shape == (10000, 1, 28, 28)
    assert test.classes is not None
    assert test.classes[0] == "T-shirt/top"
    assert test.classes[9] == "Ankle boot"
    assert set(test.describe()["class_counts"].values()) == {1000}  # balanced test set
    assert len(lp.data.load("fashion-mnist", split="train")) == 60000


@pytest.mark.parametrize("name", ["digits", "iris", "wine", "breast-cancer", "diabetes"])
def test_scikit_learn_datasets(name: str) -> None:
    info = lp.data.info(name)
    parts = {split: lp.data.load(name, split=split) for split in ("train", "test", "all")}
    assert {split: len(ds) for split, ds in parts.items()} == info.splits
    assert parts["all"].input_shape == info.input_shape
    assert parts["all"].task == info.task
    assert parts["all"].targets is not None
    assert parts["test"].targets is not None
    if info.task == "classification":
        full = torch.bincount(parts["all"].targets).float() / len(parts["all"])
        test = torch.bincount(parts["test"].targets).float() / len(parts["test"])
        assert torch.allclose(full, test, atol=0.03)  # stratified
    else:
        assert parts["all"].targets.dtype == torch.float32
    if name == "digits":
        assert float(parts["all"].features.max()) == 1.0
