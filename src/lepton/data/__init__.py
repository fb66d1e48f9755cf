"""Datasets: the ``Dataset`` type, file loaders, the built-in catalog and cleaning.

Example:
    >>> import lepton as lp
    >>> train = lp.data.load("mnist", split="train")  # doctest: +SKIP
    >>> train, val = train.split(test_size=0.1, seed=0)  # doctest: +SKIP
"""

from lepton.data._catalog import DatasetInfo, info, list_datasets, load
from lepton.data._clean import CleanReport, apply_preprocessing, clean, replay_preprocessing
from lepton.data._dataset import Dataset, Task
from lepton.data._diff import DatasetDiff, diff
from lepton.data._loaders import (
    from_arrays,
    from_csv,
    from_idx,
    from_image_folder,
    from_npz,
    from_parquet,
    parse_idx,
    read_idx,
)
from lepton.data._movielens import Ratings
from lepton.data._paths import load_path
from lepton.data._stats import Stats
from lepton.data._text import TextDataset, from_text_csv, from_text_jsonl
from lepton.data._ucr import AnomalySeries
from lepton.data._versions import (
    DatasetVersion,
    load_version,
    register,
    version,
    versions,
)

__all__ = [
    "AnomalySeries",
    "CleanReport",
    "Dataset",
    "DatasetDiff",
    "DatasetInfo",
    "DatasetVersion",
    "Ratings",
    "Stats",
    "Task",
    "TextDataset",
    "apply_preprocessing",
    "clean",
    "diff",
    "from_arrays",
    "from_csv",
    "from_idx",
    "from_image_folder",
    "from_npz",
    "from_parquet",
    "from_text_csv",
    "from_text_jsonl",
    "info",
    "list_datasets",
    "load",
    "load_path",
    "load_version",
    "parse_idx",
    "read_idx",
    "register",
    "replay_preprocessing",
    "version",
    "versions",
]
