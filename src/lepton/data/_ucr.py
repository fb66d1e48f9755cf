"""UCR anomaly archive series (KDD-TSAD 2021), as :class:`AnomalySeries`.

``ucr-135`` (InternalBleeding16, a patient's heart rate: 7,501 points, the first 1,200
normal, one labelled anomaly) ships in PyPI ``aeon`` as two CSV files
(``timestamp,value,is_anomaly``); they are read here, aeon is never imported. A file of
the archive itself reads too: its name carries the split point and the anomaly,
``135_UCR_Anomaly_InternalBleeding16_1200_4187_4199.txt`` (train end, anomaly start,
anomaly end; positions from 0, the end exclusive, as TimeEval and aeon label them).

The check is on content: the SHA-256 of the values as little-endian float64, so aeon's CSV
and the archive's text file verify the same way.
"""

from __future__ import annotations

import hashlib
import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lepton.config import get_settings
from lepton.data._dataset import Dataset
from lepton.errors import ChecksumError, DataFormatError, DataSourceMissingError

__all__ = ["UCR_135_SHA256", "AnomalySeries", "load_ucr", "locate_ucr", "parse_ucr_name"]

UCR_135_SHA256 = "5e4a0009fe89df81aeade4d62ed902c8c25798d3595b9767a5ec9c201747593e"
HOW_TO_GET = (
    "install the file with `pip install --no-deps aeon` (only its data files are read), "
    "or put the archive's 135_UCR_Anomaly_InternalBleeding16_1200_4187_4199.txt in "
    "$LEPTON_DATA_DIR/ucr-135/ or pass path="
)
_STEM = "135_UCR_Anomaly_InternalBleeding16"
_NAME = re.compile(r"^(\d+)_UCR_Anomaly_(.+)_(\d+)_(\d+)_(\d+)\.txt$")


@dataclass(frozen=True)
class AnomalySeries:
    """A univariate series with one labelled anomaly (or a part of one).

    Attributes:
        name: The series' name (``"ucr-135"``).
        values: The points, float64.
        start: Position of ``values[0]`` in the whole recording.
        train_end: Position, in the whole recording, where the normal training part ends.
        anomaly_start: Start of the labelled anomaly in the whole recording.
        anomaly_end: Its end (exclusive).
    """

    name: str
    values: np.ndarray
    start: int
    train_end: int
    anomaly_start: int
    anomaly_end: int

    def __len__(self) -> int:
        return len(self.values)

    @property
    def anomaly(self) -> tuple[int, int] | None:
        """The anomaly as ``(start, end)`` positions in :attr:`values` (end exclusive), or
        ``None`` when this part does not contain it."""
        lo, hi = self.anomaly_start - self.start, self.anomaly_end - self.start
        if hi <= 0 or lo >= len(self.values):
            return None
        return max(lo, 0), min(hi, len(self.values))

    @property
    def labels(self) -> np.ndarray:
        """1 for points of the anomaly, 0 elsewhere (int64, one per value)."""
        labels = np.zeros(len(self.values), np.int64)
        if self.anomaly is not None:
            lo, hi = self.anomaly
            labels[lo:hi] = 1
        return labels

    def hit(self, location: int, tolerance: int = 100) -> bool:
        """The archive's scoring rule: a predicted ``location`` (a position in
        :attr:`values`) is correct when it lies in the anomaly widened by ``tolerance``
        points on each side."""
        if self.anomaly is None:
            return False
        lo, hi = self.anomaly
        return lo - tolerance <= location <= hi - 1 + tolerance

    def describe(self) -> dict[str, Any]:
        """What ``Dataset.describe`` gives for :meth:`to_dataset`, plus the split point
        and the anomaly (JSON-safe)."""
        out = self.to_dataset().describe()
        out.update(
            start=self.start,
            train_end=self.train_end,
            anomaly=list(self.anomaly) if self.anomaly is not None else None,
        )
        return out

    def to_dataset(self) -> Dataset:
        """The points as a ``Dataset``: features ``(n, 1)``, targets the labels."""
        return Dataset(
            self.values[:, None].astype(np.float32),
            self.labels,
            name=self.name,
            task="classification",
            classes=["normal", "anomaly"],
            feature_names=["value"],
        )


def parse_ucr_name(name: str) -> tuple[int, int, int]:
    """``(train_end, anomaly_start, anomaly_end)`` from a UCR archive file name.

    Raises:
        DataFormatError: The name does not follow ``<id>_UCR_Anomaly_<name>_<a>_<b>_<c>.txt``.
    """
    match = _NAME.match(name)
    if match is None:
        raise DataFormatError(
            f"{name!r} is not a UCR anomaly archive file name "
            f"(<id>_UCR_Anomaly_<name>_<train end>_<anomaly start>_<anomaly end>.txt)"
        )
    train_end, lo, hi = (int(match.group(i)) for i in (3, 4, 5))
    if not 0 < train_end <= lo < hi:
        raise DataFormatError(
            f"{name!r}: expected train end <= anomaly start < anomaly end, got "
            f"{train_end}, {lo}, {hi}"
        )
    return train_end, lo, hi


def _aeon_folder() -> Path | None:
    spec = importlib.util.find_spec("aeon")  # finds the folder without importing it
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent / "datasets" / "data" / "KDD-TSAD_135"


def _source_in(folder: Path) -> Path | None:
    if folder.is_file():
        return folder
    if (folder / f"{_STEM}_TEST.csv").exists():
        return folder / f"{_STEM}_TEST.csv"
    return next(iter(sorted(folder.glob(f"{_STEM}_*_*_*.txt"))), None)


def locate_ucr(path: Path | None) -> Path | None:
    """The file ucr-135 would be read from, or ``None`` when it is not on this machine."""
    if path is not None:
        return _source_in(path) if path.exists() else None
    data_dir = get_settings().data_dir
    candidates = [data_dir / "ucr-135"] if data_dir is not None else []
    aeon = _aeon_folder()
    if aeon is not None:
        candidates.append(aeon)
    for folder in candidates:
        if folder.is_dir() and (found := _source_in(folder)) is not None:
            return found
    return None


def _read(source: Path) -> tuple[np.ndarray, int, int, int]:
    try:
        if source.suffix == ".csv":
            table = np.loadtxt(source, delimiter=",", skiprows=1, ndmin=2)
            if table.shape[1] != 3:
                raise ValueError(f"expected 3 columns, got {table.shape[1]}")
            values, flags = table[:, 1], table[:, 2]
            marked = np.flatnonzero(flags)
            if len(marked) == 0:
                raise ValueError("no point is labelled as the anomaly")
            lo, hi = int(marked[0]), int(marked[-1]) + 1
            train = source.with_name(source.name.replace("_TEST.csv", "_TRAIN.csv"))
            train_end = (
                len(np.loadtxt(train, delimiter=",", skiprows=1, ndmin=2))
                if train.exists()
                else 1200
            )
        else:
            train_end, lo, hi = parse_ucr_name(source.name)
            values = np.array(source.read_text(encoding="ascii").split(), dtype=np.float64)
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise DataFormatError(
            f"{source} cannot be read as a UCR anomaly series ({exc}); reinstall it: {HOW_TO_GET}"
        ) from None
    if hi > len(values):
        raise DataFormatError(
            f"{source}: the anomaly ends at {hi} but the series has {len(values)} points"
        )
    return values, train_end, lo, hi


def load_ucr(split: str, path: Path | None) -> AnomalySeries:
    """Series 135 of the UCR anomaly archive: ``"all"`` of it, the normal ``"train"``
    part or the ``"test"`` part that holds the anomaly."""
    source = locate_ucr(path)
    if source is None:
        where = f"{path}" if path is not None else "LEPTON_DATA_DIR or the aeon package"
        raise DataSourceMissingError(f"the ucr-135 series is not in {where}; {HOW_TO_GET}")
    values, train_end, lo, hi = _read(source)
    digest = hashlib.sha256(values.astype("<f8").tobytes()).hexdigest()
    if digest != UCR_135_SHA256:
        raise ChecksumError(
            f"{source} does not hold the published UCR series 135 (sha256 of its values "
            f"{digest[:16]}...); it is corrupt or another series: {HOW_TO_GET}"
        )
    begin, end = {"train": (0, train_end), "test": (train_end, len(values))}.get(
        split, (0, len(values))
    )
    return AnomalySeries("ucr-135", values[begin:end].copy(), begin, train_end, lo, hi)
