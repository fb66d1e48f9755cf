"""``lp.data.load(path)``: a file or a folder, read by what it is (CSV, Parquet, NPZ/NPY,
IDX, an image folder), as a new user first tries it.

| path | read with |
|---|---|
| ``*.csv``, ``*.tsv`` | :func:`from_csv` (last column the target) |
| ``*.parquet``, ``*.pq`` | :func:`from_parquet` |
| ``*.npz``, ``*.npy`` | :func:`from_npz` |
| ``*-images-idx3-ubyte[.gz]``, ``*.idx`` | :func:`from_idx` (labels: the sibling file) |
| a folder of ``<class>/<image>`` | :func:`from_image_folder` |
| a folder with MNIST's four IDX files | :func:`from_idx` of the ``split`` |
"""

from __future__ import annotations

import os
from pathlib import Path

from lepton.data._dataset import Dataset
from lepton.data._loaders import (
    _IMAGE_SUFFIXES,
    from_csv,
    from_idx,
    from_image_folder,
    from_npz,
    from_parquet,
)
from lepton.errors import DataFormatError, DataSourceMissingError

__all__ = ["SUFFIXES", "load_path", "looks_like_path"]

SUFFIXES = (".csv", ".tsv", ".parquet", ".pq", ".npz", ".npy", ".idx", ".gz", "ubyte")
_IDX_PAIRS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_HOW = (
    "load takes a catalog name (`lepton data list`), a version 'name@3', or a path to a "
    ".csv, .tsv, .parquet, .npz/.npy or IDX file, or to a folder of <class>/<image> files"
)


def looks_like_path(name: str) -> bool:
    """Whether ``name`` is written as a path (a separator, ``~`` or ``.`` first, or a data
    file's extension); a bare word is a catalog or registered name first (a folder of that
    name is read only when no dataset has it)."""
    text = str(name)
    return (
        os.sep in text
        or "/" in text
        or text.startswith(("~", "."))
        or text.lower().endswith(SUFFIXES)
    )


def _idx_labels(images: Path) -> Path:
    name = images.name
    for a, b in (("images-idx3", "labels-idx1"), ("images", "labels")):
        if a in name:
            candidate = images.with_name(name.replace(a, b))
            if candidate.exists():
                return candidate
    raise DataSourceMissingError(
        f"{images} is an IDX images file but its labels file is not beside it (looked for "
        f"{name.replace('images-idx3', 'labels-idx1')}); use lp.data.from_idx(images, labels)"
    )


def _folder(path: Path, split: str, name: str | None) -> Dataset:
    for part in ("train", "test"):
        images, labels = _IDX_PAIRS[part]
        found = [path / f for f in (images, labels)]
        found = [f if f.exists() else f.with_name(f.name + ".gz") for f in found]
        if part == split and all(f.exists() for f in found):
            return from_idx(found[0], found[1], name=name or path.name)
    subfolders = [d for d in path.iterdir() if d.is_dir()]
    has_images = any(f.suffix.lower() in _IMAGE_SUFFIXES for d in subfolders for f in d.iterdir())
    if subfolders and has_images:
        return from_image_folder(path, name=name)
    inside = sorted(p.name for p in path.iterdir())[:8]
    raise DataFormatError(
        f"{path} is a folder Lepton cannot read as a dataset (it holds {inside}); expected "
        f"<class>/<image> sub-folders or MNIST's IDX files ({_IDX_PAIRS['train'][0]}, ...). "
        f"{_HOW}"
    )


def load_path(path: str | Path, *, split: str = "train", name: str | None = None) -> Dataset:
    """Read the dataset at ``path``, choosing the loader by its extension (see the module).

    Raises:
        DataSourceMissingError: Nothing is at ``path``.
        DataFormatError: The file is not one of the formats above, or is not readable as
            its extension says.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise DataSourceMissingError(f"{p} does not exist; check the path. {_HOW}")
    if p.is_dir():
        return _folder(p, split, name)
    lower = p.name.lower()
    if lower.endswith(".csv"):
        return from_csv(p, name=name)
    if lower.endswith(".tsv"):
        return from_csv(p, delimiter="\t", name=name)
    if lower.endswith((".parquet", ".pq")):
        return from_parquet(p, name=name)
    if lower.endswith((".npz", ".npy")):
        return from_npz(p, name=name)
    if "idx3" in lower or lower.endswith((".idx", "-ubyte", "-ubyte.gz")):
        if "labels" in lower or "idx1" in lower:
            raise DataFormatError(
                f"{p} is an IDX labels file; pass the images file beside it "
                f"({lower.replace('labels-idx1', 'images-idx3')})"
            )
        return from_idx(p, _idx_labels(p), name=name or p.name.split("-")[0])
    raise DataFormatError(f"{p} has an extension Lepton does not read ({p.suffix!r}). {_HOW}")
