"""Loaders on real files written to disk: IDX, CSV, Parquet, NPZ/NPY, image folders."""

from __future__ import annotations

import gzip
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import lepton as lp
from lepton.errors import DataFormatError, DataSourceMissingError


def write_idx(path: Path, array: np.ndarray, *, compress: bool = False) -> Path:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(
        f">{array.ndim}I", *array.shape
    )
    raw = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if compress else raw)
    return path


@pytest.fixture
def idx_pair(tmp_path: Path) -> tuple[Path, Path, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(12, 5, 4), dtype=np.uint8)
    labels = rng.integers(0, 3, size=12).astype(np.uint8)
    return (
        write_idx(tmp_path / "img-idx3-ubyte.gz", images, compress=True),
        write_idx(tmp_path / "lbl-idx1-ubyte", labels),
        images,
        labels,
    )


def test_idx_raw_is_memory_mapped_and_gz_decoded(idx_pair):
    img_gz, lbl_raw, images, labels = idx_pair
    raw = lp.data.read_idx(lbl_raw)
    assert isinstance(raw, np.memmap)
    assert np.array_equal(raw, labels)
    assert np.array_equal(lp.data.read_idx(img_gz), images)
    ds = lp.data.from_idx(img_gz, lbl_raw, name="tiny")
    assert ds.features.shape == (12, 1, 5, 4)
    assert ds.features.dtype == torch.float32
    assert torch.allclose(ds.features[:, 0], torch.from_numpy(images).float() / 255)
    assert ds.targets.tolist() == labels.tolist()


def test_broken_idx_files_are_refused(tmp_path: Path, idx_pair):
    _, lbl_raw, _, _ = idx_pair
    truncated = tmp_path / "cut"
    truncated.write_bytes(lbl_raw.read_bytes()[:-3])
    with pytest.raises(DataFormatError, match="truncated"):
        lp.data.read_idx(truncated)
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x12\x34\x56\x78" + b"\x00" * 20)
    with pytest.raises(DataFormatError, match="not an IDX file"):
        lp.data.read_idx(bad)
    with pytest.raises(DataSourceMissingError, match="does not exist"):
        lp.data.read_idx(tmp_path / "missing")


def test_csv_with_missing_values_and_string_labels(tmp_path: Path):
    path = tmp_path / "flowers.csv"
    path.write_text("width,height,kind\n1.5,2,rose\n,3,tulip\nNA,4.5,rose\n2,?,daisy\n")
    ds = lp.data.from_csv(path, target="kind")
    assert ds.classes == ["daisy", "rose", "tulip"]
    assert ds.targets.tolist() == [1, 2, 1, 0]
    assert ds.feature_names == ["width", "height"]
    assert int(torch.isnan(ds.features).sum()) == 3
    assert ds.name == "flowers"


def test_csv_targets_numeric_order_regression_and_none(tmp_path: Path):
    path = tmp_path / "t.csv"
    path.write_text("a,b,y\n1,2,5\n3,4,1\n5,6,10\n7,8,1\n")
    ds = lp.data.from_csv(path)
    assert ds.classes == ["1", "5", "10"]  # numeric order, not text order
    assert ds.targets.tolist() == [1, 0, 2, 0]
    reg = lp.data.from_csv(path, target=0, task="regression")
    assert reg.task == "regression"
    assert reg.feature_names == ["b", "y"]
    floats = tmp_path / "f.csv"
    floats.write_text("a,y\n1,0.5\n2,1.25\n")
    assert lp.data.from_csv(floats).task == "regression"
    assert lp.data.from_csv(path, target=None).targets is None


def test_csv_errors_name_the_problem(tmp_path: Path):
    path = tmp_path / "bad.csv"
    path.write_text("a,b,y\n1,2,0\n3,oops,1\n")
    with pytest.raises(DataFormatError, match=r"column 'b'.*row 2.*'oops'"):
        lp.data.from_csv(path)
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("a,b,y\n1,2,0\n3,1\n")
    with pytest.raises(DataFormatError, match="row 3 has 2 fields"):
        lp.data.from_csv(ragged)
    with pytest.raises(DataFormatError, match="no column 'z'"):
        lp.data.from_csv(path, target="z")


def test_parquet_matches_csv(tmp_path: Path):
    pa = pytest.importorskip("pyarrow", reason="pyarrow comes with lepton[dev]")
    import pyarrow.parquet as pq

    table = pa.table({"x1": [1.0, 2.0, None], "x2": [3, 4, 5], "label": ["b", "a", "b"]})
    pq.write_table(table, tmp_path / "t.parquet")
    ds = lp.data.from_parquet(tmp_path / "t.parquet", target="label")
    assert ds.classes == ["a", "b"]
    assert ds.targets.tolist() == [1, 0, 1]
    assert torch.isnan(ds.features[2, 0])
    assert ds.features[:, 1].tolist() == [3.0, 4.0, 5.0]


def test_npz_keys_and_npy_memory_map(tmp_path: Path):
    np.savez(tmp_path / "a.npz", x=np.ones((4, 2), np.float32), y=np.array([0, 1, 0, 1]))
    ds = lp.data.from_npz(tmp_path / "a.npz")
    assert ds.features.shape == (4, 2)
    assert ds.targets.tolist() == [0, 1, 0, 1]
    np.savez(tmp_path / "b.npz", inputs=np.zeros((3, 1)), out=np.array([1.5, 2.5, 3.5]))
    reg = lp.data.from_npz(tmp_path / "b.npz", features_key="inputs", targets_key="out")
    assert reg.task == "regression"
    with pytest.raises(DataFormatError, match="features_key"):
        lp.data.from_npz(tmp_path / "b.npz")
    np.save(tmp_path / "c.npy", np.arange(12, dtype=np.float32).reshape(6, 2))
    mapped = lp.data.from_npz(tmp_path / "c.npy")
    assert mapped.features[5, 1].item() == 11.0


class Exploit:
    """Unpickling this would create a canary file: the loaders must never unpickle."""

    def __init__(self, canary: Path) -> None:
        self.canary = canary

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (open, (str(self.canary), "w"))


def test_pickled_payloads_never_run(tmp_path: Path):
    canary = tmp_path / "CANARY"
    payload = np.array([Exploit(canary)], dtype=object)
    np.savez(tmp_path / "evil.npz", x=payload, y=np.array([0]))
    with pytest.raises(DataFormatError, match="pickle"):
        lp.data.from_npz(tmp_path / "evil.npz")
    np.save(tmp_path / "evil.npy", payload, allow_pickle=True)
    with pytest.raises(DataFormatError, match="pickle"):
        lp.data.from_npz(tmp_path / "evil.npy")
    (tmp_path / "raw.npz").write_bytes(pickle.dumps(Exploit(canary)))
    with pytest.raises(DataFormatError):
        lp.data.from_npz(tmp_path / "raw.npz")
    assert not canary.exists()
    assert not os.path.exists("CANARY")


def test_image_folder(tmp_path: Path):
    for label, color in (("cat", 200), ("dog", 30)):
        (tmp_path / label).mkdir()
        for i in range(3):
            Image.new("RGB", (6, 4), (color, i * 10, 0)).save(tmp_path / label / f"{i}.png")
    (tmp_path / "dog" / "notes.txt").write_text("not an image")
    ds = lp.data.from_image_folder(tmp_path)
    assert ds.classes == ["cat", "dog"]
    assert ds.features.shape == (6, 3, 4, 6)
    assert ds.features[0, 0, 0, 0].item() == pytest.approx(200 / 255)
    gray = lp.data.from_image_folder(tmp_path, grayscale=True, size=(8, 8))
    assert gray.features.shape == (6, 1, 8, 8)
    Image.new("RGB", (9, 9)).save(tmp_path / "cat" / "big.png")
    with pytest.raises(DataFormatError, match=r"size=\(H, W\)"):
        lp.data.from_image_folder(tmp_path)
