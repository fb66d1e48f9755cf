"""Loaders for files on disk: IDX, CSV, Parquet, NPZ/NPY and image folders.

None of them can execute code from a file: NumPy files are read with
``allow_pickle=False`` and nothing else is unpickled.
"""

from __future__ import annotations

import csv
import gzip
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lepton.data._dataset import Dataset, Task, Transform
from lepton.errors import DataError, DataFormatError, DataSourceMissingError

__all__ = [
    "from_arrays",
    "from_csv",
    "from_idx",
    "from_image_folder",
    "from_npz",
    "from_parquet",
    "parse_idx",
    "read_idx",
]

_IDX_DTYPES: dict[int, np.dtype[Any]] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_MISSING = {"", "na", "nan", "null", "none", "?"}
_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff"}


def _existing(path: str | Path) -> Path:
    p = Path(path).expanduser()
    if not p.exists():
        raise DataSourceMissingError(f"{p} does not exist; check the path")
    return p


def parse_idx(raw: bytes, where: str | Path = "<bytes>") -> np.ndarray:
    """Parse the bytes of an IDX file (header: zero, zero, dtype code, number of dims)."""
    header = raw[:4]
    if len(header) < 4 or header[0] != 0 or header[1] != 0 or header[2] not in _IDX_DTYPES:
        raise DataFormatError(f"{where} is not an IDX file (bad magic number {header.hex()})")
    dtype, ndim = _IDX_DTYPES[header[2]], header[3]
    offset = 4 + 4 * ndim
    if len(raw) < offset:
        raise DataFormatError(
            f"{where} is truncated: its header ends after {len(raw)} of {offset} bytes; "
            f"fetch it again"
        )
    shape = tuple(int(d) for d in np.frombuffer(raw[4:offset], dtype=">u4"))
    expected = offset + math.prod(shape) * dtype.itemsize
    if len(shape) != ndim or len(raw) != expected:
        raise DataFormatError(
            f"{where} is truncated or corrupt: its header says shape {shape} ({expected} "
            f"bytes), it has {len(raw)} bytes; fetch it again"
        )
    return np.frombuffer(raw, dtype=dtype, offset=offset).reshape(shape)


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (the MNIST format), gzip-compressed or raw.

    Raw files are memory-mapped copy-on-write (no copy); ``.gz`` files are decompressed.
    """
    p = _existing(path)
    if p.suffix != ".gz":
        with open(p, "rb") as handle:
            head = handle.read(4 + 4 * 4)
        ndim = head[3] if len(head) >= 4 else 0
        if len(head) < 4 or head[:2] != b"\0\0" or head[2] not in _IDX_DTYPES:
            raise DataFormatError(f"{p} is not an IDX file (bad magic number {head[:4].hex()})")
        dtype, offset = _IDX_DTYPES[head[2]], 4 + 4 * ndim
        if len(head) < offset:
            raise DataFormatError(f"{p} is truncated inside its header; fetch it again")
        shape = tuple(int(d) for d in np.frombuffer(head[4:offset], dtype=">u4"))
        if p.stat().st_size != offset + math.prod(shape) * dtype.itemsize:
            raise DataFormatError(
                f"{p} is truncated or corrupt (header shape {shape}); fetch it again"
            )
        return np.memmap(p, dtype=dtype, mode="c", offset=offset, shape=shape)
    try:
        with gzip.open(p, "rb") as handle:
            raw = handle.read()
    except (OSError, EOFError) as exc:
        raise DataFormatError(f"{p} is not a valid gzip file ({exc}); fetch it again") from None
    return parse_idx(raw, p)


def from_idx(
    images: str | Path,
    labels: str | Path,
    *,
    name: str = "idx",
    classes: Sequence[str] | None = None,
    scale: bool = True,
) -> Dataset:
    """Images ``(N, 1, H, W)`` (float32 in [0, 1] when ``scale``) and int64 labels."""
    x = read_idx(images)
    y = read_idx(labels)
    if x.ndim != 3:
        raise DataFormatError(f"{images} holds shape {x.shape}, expected (N, H, W) images")
    features = torch.from_numpy(np.require(x, np.uint8, "W")).unsqueeze(1)  # (N, 1, H, W)
    if scale:
        features = features.float().div_(255.0)
    targets = torch.from_numpy(np.asarray(y, dtype=np.int64))
    return Dataset(features, targets, name=name, classes=classes, task="classification")


def _encode_target(
    values: list[str], task: Task | None
) -> tuple[np.ndarray, list[str] | None, Task]:
    numeric = _to_floats(values)
    integral = numeric is not None and bool(np.all(numeric == np.round(numeric)))
    if numeric is not None and task != "classification" and (task == "regression" or not integral):
        return numeric.astype(np.float32), None, "regression"
    if numeric is not None and integral:
        labels = numeric.astype(np.int64)
        if labels.min() == 0 and len(np.unique(labels)) == labels.max() + 1:
            return labels, None, "classification"
        uniques, codes = np.unique(labels, return_inverse=True)  # numeric order, not text
        return codes.astype(np.int64), [str(u) for u in uniques], "classification"
    names, codes = np.unique(np.asarray(values), return_inverse=True)
    return codes.astype(np.int64), [str(n) for n in names], "classification"


def _to_floats(values: Sequence[str]) -> np.ndarray | None:
    out = np.empty(len(values), dtype=np.float64)
    for i, v in enumerate(values):
        text = v.strip()
        if text.lower() in _MISSING:
            out[i] = np.nan
            continue
        try:
            out[i] = float(text)
        except ValueError:
            return None
    return out


def _table_to_dataset(
    columns: dict[str, list[Any]],
    target: str | int | None,
    task: Task | None,
    name: str,
    where: Path,
) -> Dataset:
    names = list(columns)
    if not names or not columns[names[0]]:
        raise DataFormatError(f"{where} has no data rows")
    target_name: str | None = None
    if target is not None:
        if isinstance(target, int):
            if not -len(names) <= target < len(names):
                raise DataFormatError(
                    f"target column {target} is out of range: {where} has {len(names)} columns"
                )
            target_name = names[target]
        elif target not in columns:
            raise DataFormatError(f"{where} has no column {target!r}; columns are {names}")
        else:
            target_name = target
    feature_cols = []
    for col in names:
        if col == target_name:
            continue
        values = [("" if v is None else str(v)) for v in columns[col]]
        parsed = _to_floats(values)
        if parsed is None:
            bad = next(i for i, v in enumerate(values) if _to_floats([v]) is None)
            raise DataFormatError(
                f"{where}: column {col!r} is not numeric (row {bad + 1}: {values[bad]!r}); "
                f"encode it, drop it, or make it the target"
            )
        feature_cols.append(parsed.astype(np.float32))
    if not feature_cols:
        raise DataFormatError(f"{where} has no feature columns besides the target")
    x = np.stack(feature_cols, axis=1)
    feature_names = [c for c in names if c != target_name]
    if target_name is None:
        return Dataset(x, None, name=name, feature_names=feature_names)
    raw = ["" if v is None else str(v) for v in columns[target_name]]
    y, classes, inferred = _encode_target(raw, task)
    return Dataset(x, y, name=name, task=inferred, classes=classes, feature_names=feature_names)


def from_csv(
    path: str | Path,
    *,
    target: str | int | None = -1,
    task: Task | None = None,
    delimiter: str = ",",
    header: bool = True,
    name: str | None = None,
) -> Dataset:
    """Load a CSV of numeric features and one target column.

    Missing values (empty, ``NA``, ``nan``, ``?``) become NaN (see :func:`clean`); a string
    target column becomes sorted class names encoded 0..K-1.

    Args:
        path: The CSV file.
        target: Target column name or index (default: the last); ``None`` for no target.
        task: Force ``"classification"`` or ``"regression"`` (default: inferred).
        delimiter: Field separator.
        header: Whether the first row holds column names.
        name: Dataset name (default: the file stem).
    """
    p = _existing(path)
    with open(p, newline="", encoding="utf-8-sig") as handle:
        rows = list(csv.reader(handle, delimiter=delimiter))
    rows = [r for r in rows if r]
    if not rows:
        raise DataFormatError(f"{p} is empty")
    names = rows[0] if header else [f"x{i}" for i in range(len(rows[0]))]
    body = rows[1:] if header else rows
    for i, row in enumerate(body):
        if len(row) != len(names):
            raise DataFormatError(
                f"{p}: row {i + 1 + int(header)} has {len(row)} fields, expected {len(names)}"
            )
    columns = {n: [row[j] for row in body] for j, n in enumerate(names)}
    return _table_to_dataset(columns, target, task, name or p.stem, p)


def from_parquet(
    path: str | Path,
    *,
    target: str | int | None = -1,
    task: Task | None = None,
    name: str | None = None,
) -> Dataset:
    """Load a Parquet file like :func:`from_csv` (needs ``pip install 'lepton[parquet]'``)."""
    p = _existing(path)
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError("reading Parquet needs pyarrow: pip install 'lepton[parquet]'") from None
    try:
        table = pq.read_table(p)
    except Exception as exc:  # pyarrow raises its own hierarchy
        raise DataFormatError(f"{p} is not a readable Parquet file ({exc})") from None
    return _table_to_dataset(table.to_pydict(), target, task, name or p.stem, p)


def _pick(
    keys: Sequence[str], wanted: str | None, choices: Sequence[str], p: Path, what: str
) -> str | None:
    if wanted is not None:
        if wanted not in keys:
            raise DataFormatError(f"{p} has no array {wanted!r}; it has {sorted(keys)}")
        return wanted
    return next((k for k in choices if k in keys), None)


def from_npz(
    path: str | Path,
    *,
    features_key: str | None = None,
    targets_key: str | None = None,
    task: Task | None = None,
    name: str | None = None,
) -> Dataset:
    """Load features/targets from ``.npz`` (or features from a memory-mapped ``.npy``).

    Pickled objects are never loaded: an object array is refused.
    """
    p = _existing(path)
    try:
        if p.suffix == ".npy":
            return Dataset(np.load(p, mmap_mode="r", allow_pickle=False), name=name or p.stem)
        with np.load(p, allow_pickle=False) as archive:
            keys = list(archive.keys())
            fkey = _pick(keys, features_key, ("features", "x", "X", "data"), p, "features")
            tkey = _pick(keys, targets_key, ("targets", "y", "labels", "target"), p, "targets")
            if fkey is None:
                raise DataFormatError(
                    f"{p} has no features array (looked for features/x/X/data; it has "
                    f"{sorted(keys)}); pass features_key="
                )
            x = archive[fkey]
            y = archive[tkey] if tkey is not None else None
            meta = json.loads(str(archive["meta"])) if "meta" in keys else {}  # Dataset.save
    except ValueError as exc:
        if "pickle" in str(exc).lower() or "python objects" in str(exc).lower():
            raise DataFormatError(
                f"{p} contains pickled Python objects, which Lepton never loads (they can run "
                f"code); save plain numeric arrays instead"
            ) from None
        raise DataFormatError(f"{p} is not a valid NumPy file ({exc})") from None
    return Dataset(
        x,
        y,
        name=name or meta.get("name") or p.stem,
        task=task or meta.get("task"),
        classes=meta.get("classes"),
        feature_names=meta.get("feature_names"),
        preprocessing=meta.get("preprocessing") or (),
    )


def from_image_folder(
    root: str | Path,
    *,
    size: tuple[int, int] | None = None,
    grayscale: bool = False,
    name: str | None = None,
    augment: Transform | None = None,
) -> Dataset:
    """Load ``root/<class_name>/<image>`` files: features ``(N, C, H, W)`` in [0, 1].

    Args:
        root: Folder with one sub-folder per class (sorted names become the classes).
        size: Resize every image to ``(height, width)``; required when sizes differ.
        grayscale: Convert to one channel (else RGB).
        augment: Augmentation on the fly, e.g. ``lp.vision.Augment(padding=2,
            hflip=True)``: applied to every training batch as it is drawn (the dataset's
            ``transform``; :meth:`~Dataset.with_transform` ``(None)`` turns it off, e.g.
            for the copy you evaluate on).
    """
    from PIL import Image, UnidentifiedImageError

    base = _existing(root)
    class_dirs = sorted(d for d in base.iterdir() if d.is_dir())
    if not class_dirs:
        raise DataFormatError(
            f"{base} has no class sub-folders; lay images out as {base}/<class>/<file>.png"
        )
    arrays, labels = [], []
    for label, folder in enumerate(class_dirs):
        for file in sorted(folder.iterdir()):
            if file.suffix.lower() not in _IMAGE_SUFFIXES:
                continue
            try:
                with Image.open(file) as raw:
                    img = raw.convert("L" if grayscale else "RGB")
                if size is not None:
                    img = img.resize((size[1], size[0]))
                arrays.append(np.asarray(img, dtype=np.uint8))
            except (UnidentifiedImageError, OSError) as exc:
                raise DataFormatError(f"{file} is not a readable image ({exc})") from None
            labels.append(label)
    if not arrays:
        raise DataFormatError(f"{base} has class folders but no images ({sorted(_IMAGE_SUFFIXES)})")
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise DataFormatError(
            f"images in {base} have different sizes {sorted(shapes)[:3]}...; pass size=(H, W) "
            f"to resize them"
        )
    x = torch.from_numpy(np.stack(arrays)).float().div_(255.0)
    x = x.unsqueeze(1) if grayscale else x.permute(0, 3, 1, 2).contiguous()  # (N, C, H, W)
    return Dataset(
        x,
        np.asarray(labels, dtype=np.int64),
        name=name or base.name,
        classes=[d.name for d in class_dirs],
        task="classification",
        transform=augment,
    )


def from_arrays(features: Any, targets: Any = None, **kwargs: Any) -> Dataset:
    """Same as ``Dataset(features, targets, **kwargs)``."""
    return Dataset(features, targets, **kwargs)
