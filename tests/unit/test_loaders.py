"""File loaders on real files written into tmp_path: IDX, CSV, Parquet, NPZ/NPY, images."""

from __future__ import annotations

import gzip
import math
import pickle
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import lepton as lp
from lepton.data import (
    from_csv,
    from_idx,
    from_image_folder,
    from_npz,
    from_parquet,
    parse_idx,
    read_idx,
)
from lepton.errors import DataFormatError, DataSourceMissingError


# -- IDX ---------------------------------------------------------------------------------
def idx_bytes(array: np.ndarray) -> bytes:
    """The IDX encoding of a uint8 array: magic 0x000008<ndim>, big-endian dims, data."""
    assert array.dtype == np.uint8
    magic = struct.pack(">I", 0x00000800 | array.ndim)
    dims = struct.pack(f">{array.ndim}I", *array.shape)
    return magic + dims + array.tobytes()


def write_idx(path: Path, array: np.ndarray) -> Path:
    raw = idx_bytes(array)
    path.write_bytes(gzip.compress(raw) if path.suffix == ".gz" else raw)
    return path


@pytest.fixture
def images() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(6, 5, 4), dtype=np.uint8)


@pytest.fixture
def labels() -> np.ndarray:
    return np.array([0, 1, 2, 1, 0, 2], dtype=np.uint8)


def test_idx_magic_numbers_are_the_published_ones(images: np.ndarray, labels: np.ndarray) -> None:
    assert idx_bytes(images)[:4] == bytes.fromhex("00000803")
    assert idx_bytes(labels)[:4] == bytes.fromhex("00000801")


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_read_idx_raw_and_gzip(tmp_path: Path, images: np.ndarray, suffix: str) -> None:
    path = write_idx(tmp_path / f"imgs-idx3-ubyte{suffix}", images)
    got = read_idx(path)
    assert got.shape == (6, 5, 4)
    np.testing.assert_array_equal(got, images)


def test_read_idx_of_a_raw_file_is_a_copy_on_write_memmap(
    tmp_path: Path, images: np.ndarray
) -> None:
    path = write_idx(tmp_path / "imgs", images)
    got = read_idx(path)
    assert isinstance(got, np.memmap)
    assert got.offset == 4 + 4 * 3
    got[0, 0, 0] = 255 - got[0, 0, 0]  # copy-on-write: the file is not changed
    assert path.read_bytes() == idx_bytes(images)


def test_parse_idx_of_bytes(images: np.ndarray) -> None:
    np.testing.assert_array_equal(parse_idx(idx_bytes(images)), images)


@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize("cut", [3, 2], ids=["in-body", "in-header"])
def test_truncated_idx_is_a_format_error(
    tmp_path: Path, images: np.ndarray, suffix: str, cut: int
) -> None:
    raw = idx_bytes(images)
    raw = raw[:-cut] if cut == 3 else raw[:6]  # body short by 3 bytes / header cut mid-dimension
    path = tmp_path / f"short{suffix}"
    path.write_bytes(gzip.compress(raw) if suffix else raw)
    with pytest.raises(DataFormatError, match=r"truncated.*fetch it again"):
        read_idx(path)


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_bad_magic_is_a_format_error(tmp_path: Path, images: np.ndarray, suffix: str) -> None:
    raw = b"\x1f\x00\x08\x03" + idx_bytes(images)[4:]
    path = tmp_path / f"bad{suffix}"
    path.write_bytes(gzip.compress(raw) if suffix else raw)
    with pytest.raises(DataFormatError, match=r"not an IDX file \(bad magic number 1f000803\)"):
        read_idx(path)


def test_a_gz_that_is_not_gzip_is_a_format_error(tmp_path: Path, images: np.ndarray) -> None:
    path = tmp_path / "fake.gz"
    path.write_bytes(idx_bytes(images))
    with pytest.raises(DataFormatError, match=r"not a valid gzip file.*fetch it again"):
        read_idx(path)


def test_missing_idx_file(tmp_path: Path) -> None:
    with pytest.raises(DataSourceMissingError, match="does not exist; check the path"):
        read_idx(tmp_path / "nope")


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_from_idx_gives_scaled_images_and_labels(
    tmp_path: Path, images: np.ndarray, labels: np.ndarray, suffix: str
) -> None:
    ds = from_idx(
        write_idx(tmp_path / f"x{suffix}", images),
        write_idx(tmp_path / f"y{suffix}", labels),
        name="tiny",
        classes=["a", "b", "c"],
    )
    assert ds.features.shape == (6, 1, 5, 4)
    assert ds.features.dtype == torch.float32
    assert float(ds.features.min()) >= 0.0
    assert float(ds.features.max()) <= 1.0
    assert torch.allclose(ds.features[:, 0], torch.from_numpy(images).float() / 255.0)
    assert ds.targets is not None
    assert ds.targets.tolist() == labels.tolist()
    assert ds.classes == ["a", "b", "c"]
    assert ds.task == "classification"


def test_from_idx_unscaled_keeps_uint8(
    tmp_path: Path, images: np.ndarray, labels: np.ndarray
) -> None:
    ds = from_idx(write_idx(tmp_path / "x", images), write_idx(tmp_path / "y", labels), scale=False)
    assert ds.features.dtype == torch.uint8
    assert torch.equal(ds.features[:, 0], torch.from_numpy(images))


def test_from_idx_refuses_non_image_arrays(tmp_path: Path, labels: np.ndarray) -> None:
    with pytest.raises(DataFormatError, match=r"expected \(N, H, W\) images"):
        from_idx(write_idx(tmp_path / "x", labels), write_idx(tmp_path / "y", labels))


# -- CSV ---------------------------------------------------------------------------------
def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_csv_header_missing_values_and_string_target(tmp_path: Path) -> None:
    path = write(
        tmp_path / "animals.csv",
        "weight,height,kind\n1.5,,dog\nNA,2,cat\n3,?,emu\n4,5,cat\n",
    )
    ds = from_csv(path)
    assert ds.name == "animals"
    assert ds.feature_names == ["weight", "height"]
    assert ds.features.dtype == torch.float32
    x = ds.features.numpy()
    assert np.isnan(x[0, 1])
    assert np.isnan(x[1, 0])
    assert np.isnan(x[2, 1])
    assert x[0, 0] == 1.5
    assert x[3].tolist() == [4.0, 5.0]
    assert int(np.isnan(x).sum()) == 3
    assert ds.task == "classification"
    assert ds.classes == ["cat", "dog", "emu"]
    assert ds.targets is not None
    assert ds.targets.tolist() == [1, 0, 2, 0]


def test_csv_non_dense_numeric_labels_keep_numeric_order(tmp_path: Path) -> None:
    path = write(tmp_path / "t.csv", "a,y\n0,5\n1,1\n2,10\n3,2\n4,5\n")
    ds = from_csv(path)
    assert ds.task == "classification"
    assert ds.classes == ["1", "2", "5", "10"]  # not the text order 1, 10, 2, 5
    assert ds.targets is not None
    assert ds.targets.tolist() == [2, 0, 3, 1, 2]


def test_csv_dense_labels_stay_as_they_are(tmp_path: Path) -> None:
    ds = from_csv(write(tmp_path / "t.csv", "a,y\n0,2\n1,0\n2,1\n"))
    assert ds.classes == ["0", "1", "2"]
    assert ds.targets is not None
    assert ds.targets.tolist() == [2, 0, 1]


def test_csv_float_target_is_regression(tmp_path: Path) -> None:
    ds = from_csv(write(tmp_path / "t.csv", "a,y\n0,0.5\n1,1.25\n2,-3\n"))
    assert ds.task == "regression"
    assert ds.classes is None
    assert ds.targets is not None
    assert ds.targets.dtype == torch.float32
    assert ds.targets.tolist() == [0.5, 1.25, -3.0]


def test_csv_task_can_be_forced(tmp_path: Path) -> None:
    path = write(tmp_path / "t.csv", "a,y\n0,0\n1,1\n2,2\n")
    ds = from_csv(path, task="regression")
    assert ds.task == "regression"
    assert ds.targets is not None
    assert ds.targets.tolist() == [0.0, 1.0, 2.0]


def test_csv_non_numeric_feature_names_column_and_row(tmp_path: Path) -> None:
    path = write(tmp_path / "t.csv", "a,b,y\n1,2,0\n3,oops,1\n")
    with pytest.raises(
        DataFormatError, match=r"column 'b' is not numeric \(row 2: 'oops'\); encode it, drop it"
    ):
        from_csv(path)


def test_csv_ragged_row_is_a_format_error(tmp_path: Path) -> None:
    path = write(tmp_path / "t.csv", "a,b,y\n1,2,0\n3,1\n")
    with pytest.raises(DataFormatError, match="row 3 has 2 fields, expected 3"):
        from_csv(path)


def test_csv_target_by_name_by_index_and_none(tmp_path: Path) -> None:
    path = write(tmp_path / "t.csv", "label,a,b\n1,10,20\n0,11,21\n1,12,22\n")
    by_name = from_csv(path, target="label")
    by_index = from_csv(path, target=0)
    assert by_name.feature_names == by_index.feature_names == ["a", "b"]
    assert by_name.fingerprint() == by_index.fingerprint()
    assert by_name.targets is not None
    assert by_name.targets.tolist() == [1, 0, 1]
    last = from_csv(path)  # default: the last column
    assert last.feature_names == ["label", "a"]
    assert last.task == "classification"
    assert last.classes == ["20", "21", "22"]
    none = from_csv(path, target=None)
    assert none.targets is None
    assert none.task is None
    assert none.features.shape == (3, 3)


def test_csv_bad_target_column(tmp_path: Path) -> None:
    path = write(tmp_path / "t.csv", "a,b\n1,2\n")
    with pytest.raises(DataFormatError, match=r"no column 'y'; columns are \['a', 'b'\]"):
        from_csv(path, target="y")
    with pytest.raises(
        DataFormatError, match=r"target column 5 is out of range: .*t\.csv has 2 columns"
    ):
        from_csv(path, target=5)


def test_csv_without_header_and_other_delimiter(tmp_path: Path) -> None:
    ds = from_csv(write(tmp_path / "t.csv", "1;2;0\n3;4;1\n"), header=False, delimiter=";")
    assert ds.feature_names == ["x0", "x1"]
    assert ds.features.tolist() == [[1.0, 2.0], [3.0, 4.0]]


def test_csv_with_only_a_header_has_no_rows(tmp_path: Path) -> None:
    with pytest.raises(DataFormatError, match="no data rows"):
        from_csv(write(tmp_path / "t.csv", "a,b,y\n"))
    with pytest.raises(DataFormatError, match=r"e\.csv is empty"):
        from_csv(write(tmp_path / "e.csv", ""))


def test_missing_csv_file(tmp_path: Path) -> None:
    with pytest.raises(DataSourceMissingError, match=r"absent\.csv does not exist; check the path"):
        from_csv(tmp_path / "absent.csv")


# -- Parquet -----------------------------------------------------------------------------
def write_parquet(path: Path, columns: dict[str, list[Any]]) -> Path:
    pa = pytest.importorskip("pyarrow", reason="pip install 'lepton[parquet]'")
    import pyarrow.parquet as pq

    pq.write_table(pa.table(columns), path)
    return path


def test_parquet_missing_values_and_string_target(tmp_path: Path) -> None:
    path = write_parquet(
        tmp_path / "p.parquet",
        {"a": [1.0, None, 3.0], "b": [1, 2, 3], "kind": ["y", "x", "y"]},
    )
    ds = from_parquet(path)
    assert ds.feature_names == ["a", "b"]
    assert np.isnan(ds.features[1, 0].item())
    assert ds.features[2].tolist() == [3.0, 3.0]
    assert ds.classes == ["x", "y"]
    assert ds.targets is not None
    assert ds.targets.tolist() == [1, 0, 1]


def test_parquet_numeric_target_by_name_and_regression(tmp_path: Path) -> None:
    path = write_parquet(tmp_path / "p.parquet", {"y": [0.5, 1.5], "a": [1, 2]})
    ds = from_parquet(path, target="y")
    assert ds.task == "regression"
    assert ds.targets is not None
    assert ds.targets.tolist() == [0.5, 1.5]
    labels = from_parquet(write_parquet(tmp_path / "q.parquet", {"a": [1, 2, 3], "y": [1, 2, 5]}))
    assert labels.classes == ["1", "2", "5"]


def test_parquet_non_numeric_feature(tmp_path: Path) -> None:
    path = write_parquet(tmp_path / "p.parquet", {"a": ["1", "zz"], "y": [0, 1]})
    with pytest.raises(DataFormatError, match=r"column 'a' is not numeric \(row 2: 'zz'\)"):
        from_parquet(path)


def test_not_a_parquet_file(tmp_path: Path) -> None:
    pytest.importorskip("pyarrow", reason="pip install 'lepton[parquet]'")
    with pytest.raises(DataFormatError, match="not a readable Parquet file"):
        from_parquet(write(tmp_path / "p.parquet", "a,b\n1,2\n"))


# -- NPZ / NPY ---------------------------------------------------------------------------
def test_npz_with_x_y_keys(tmp_path: Path) -> None:
    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    np.savez(tmp_path / "d.npz", x=x, y=np.array([0, 1, 1, 0]))
    ds = from_npz(tmp_path / "d.npz")
    assert ds.name == "d"
    assert ds.features.numpy().tolist() == x.tolist()
    assert ds.targets is not None
    assert ds.targets.tolist() == [0, 1, 1, 0]
    assert ds.task == "classification"


def test_npz_with_custom_keys(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", imgs=np.ones((3, 2, 2)), vals=np.array([0.1, 0.2, 0.3]))
    ds = from_npz(tmp_path / "d.npz", features_key="imgs", targets_key="vals", name="custom")
    assert ds.features.shape == (3, 2, 2)
    assert ds.name == "custom"
    assert ds.task == "regression"
    with pytest.raises(DataFormatError, match=r"has no features array.*pass features_key="):
        from_npz(tmp_path / "d.npz")
    with pytest.raises(DataFormatError, match=r"has no array 'nope'; it has \['imgs', 'vals'\]"):
        from_npz(tmp_path / "d.npz", features_key="nope")


def test_npy_is_memory_mapped(tmp_path: Path) -> None:
    x = np.random.default_rng(0).normal(size=(64, 8)).astype(np.float32)
    path = tmp_path / "feats.npy"
    np.save(path, x)
    ds = from_npz(path)
    assert ds.targets is None
    assert ds.name == "feats"
    assert torch.equal(ds.features, torch.from_numpy(x))
    maps = Path("/proc/self/maps")
    if maps.exists():
        assert str(path) in maps.read_text()
    ds.features[0, 0] = 99.0  # copy-on-write: the file is left alone
    assert np.load(path)[0, 0] == x[0, 0]


def test_npz_with_an_object_array_is_refused(tmp_path: Path) -> None:
    np.savez(tmp_path / "o.npz", x=np.array([[1, "a"]], dtype=object))
    with pytest.raises(DataFormatError, match="pickled Python objects, which Lepton never loads"):
        from_npz(tmp_path / "o.npz")


class _CreatesFile:
    """Unpickling this creates a file: the stand-in for arbitrary code execution."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return (open, (str(self.target), "w"))


def test_pickled_payload_is_never_executed(tmp_path: Path) -> None:
    canary = tmp_path / "CANARY"
    np.save(tmp_path / "evil.npy", np.array([_CreatesFile(canary)], dtype=object))
    np.savez(tmp_path / "evil.npz", x=np.array([_CreatesFile(canary)], dtype=object))
    # a bare pickle stream under a NumPy name, not even a zip or .npy header
    (tmp_path / "raw.npz").write_bytes(pickle.dumps(_CreatesFile(canary)))
    for name in ("evil.npy", "evil.npz", "raw.npz"):
        with pytest.raises(
            DataFormatError, match="pickled Python objects, which Lepton never loads"
        ):
            from_npz(tmp_path / name)
    assert not canary.exists()
    # the payload is real: an unsafe loader would have run it
    control = tmp_path / "CONTROL"
    np.save(tmp_path / "control.npy", np.array([_CreatesFile(control)], dtype=object))
    np.load(tmp_path / "control.npy", allow_pickle=True)
    assert control.exists()


# -- image folders -----------------------------------------------------------------------
def write_png(path: Path, size: tuple[int, int], color: tuple[int, int, int]) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)  # size is (width, height)


@pytest.fixture
def image_root(tmp_path: Path) -> Path:
    root = tmp_path / "pets"
    write_png(root / "zebra" / "0.png", (5, 4), (0, 0, 255))
    write_png(root / "cat" / "0.png", (5, 4), (255, 0, 0))
    write_png(root / "cat" / "1.png", (5, 4), (0, 255, 0))
    (root / "cat" / "notes.txt").write_text("not an image")
    return root


def test_image_folder_rgb(image_root: Path) -> None:
    ds = from_image_folder(image_root)
    assert ds.classes == ["cat", "zebra"]
    assert ds.name == "pets"
    assert ds.features.shape == (3, 3, 4, 5)  # (N, C, H, W)
    assert ds.features.dtype == torch.float32
    assert ds.targets is not None
    assert ds.targets.tolist() == [0, 0, 1]
    assert ds.features[0, 0].eq(1).all()
    assert ds.features[0, 1:].eq(0).all()
    assert ds.features[2, 2].eq(1).all()
    assert ds.features[2, :2].eq(0).all()


def test_image_folder_grayscale(image_root: Path) -> None:
    ds = from_image_folder(image_root, grayscale=True)
    assert ds.features.shape == (3, 1, 4, 5)
    assert float(ds.features.min()) > 0.0
    assert float(ds.features.max()) < 1.0


def test_image_folder_different_sizes_need_size(image_root: Path) -> None:
    write_png(image_root / "zebra" / "big.png", (9, 7), (1, 2, 3))
    with pytest.raises(DataFormatError, match=r"different sizes.*pass size=\(H, W\)"):
        from_image_folder(image_root)
    ds = from_image_folder(image_root, size=(6, 8))
    assert ds.features.shape == (4, 3, 6, 8)


def test_image_folder_unreadable_image(image_root: Path) -> None:
    (image_root / "cat" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DataFormatError, match=r"broken\.png is not a readable image"):
        from_image_folder(image_root)


def test_image_folder_without_class_folders(tmp_path: Path) -> None:
    with pytest.raises(DataFormatError, match="no class sub-folders; lay images out as"):
        from_image_folder(tmp_path)
    (tmp_path / "empty_class").mkdir()
    with pytest.raises(DataFormatError, match=r"has class folders but no images \(\['\.bmp'"):
        from_image_folder(tmp_path)


def test_from_arrays_is_the_constructor() -> None:
    ds = lp.data.from_arrays(np.zeros((2, 3)), np.array([0, 1]), name="arr")
    assert ds.name == "arr"
    assert ds.num_classes == 2
    assert math.prod(ds.features.shape) == 6
