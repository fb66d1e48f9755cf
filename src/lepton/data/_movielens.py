"""MovieLens ml-latest-small (2016) and the :class:`Ratings` table it loads into.

The files come from Debian ``r-cran-dslabs`` (``dslabs::movielens``: 100,004 ratings by
671 users of 9,066 movies, with titles, years and genres), unpacked without R by
``scripts/setup.sh`` (``apt-get download`` + ``dpkg -x``) and read with PyPI ``rdata``.
R keeps package data in a lazy-load database (``Rdata.rdx`` indexes ``Rdata.rdb``); each
object there is a 4-byte length and a zlib stream of R's serialization, which ``rdata``
parses. A ``movielens.rda`` (dslabs' source file, ``save(movielens, ...)``) reads too.

The check is on content, not on a container: the SHA-256 of the ratings and the movie
table in a fixed binary layout, so the Debian database, an ``.rda`` copy or a later
repackaging verify the same way.
"""

from __future__ import annotations

import hashlib
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lepton.config import get_settings
from lepton.errors import ChecksumError, DataError, DataFormatError, DataSourceMissingError

__all__ = ["MOVIELENS_SHA256", "Ratings", "load_movielens", "locate_movielens"]

#: SHA-256 of the content (see :func:`_content_digest`) of ml-latest-small as dslabs 0.7.4
#: ships it. For the record, Debian's ``Rdata.rdb`` of r-cran-dslabs 0.7.4-1 has SHA-256
#: 7f740c8802abcf5de56096417560b2d5be317c59f30d50c9d37548695952aa3b and the decompressed
#: ``movielens`` object in it 900941e55084380c5faaf64a37e5754fc621e972695bd263839439d32a8dcc43.
MOVIELENS_SHA256 = "d5074c1dfe8cb3ec5ca3d0e606611361df446a61a1ae6503740356fca1de15b9"
HOW_TO_GET = (
    "run scripts/setup.sh (it unpacks Debian r-cran-dslabs with apt-get download + dpkg -x, "
    "no R needed, and pip-installs rdata), or put dslabs' Rdata.rdb/Rdata.rdx or "
    "movielens.rda in $LEPTON_DATA_DIR/movielens/ or pass path="
)
#: Where the set-up unpacks it, and where a real ``apt-get install r-cran-dslabs`` puts it.
_PACKAGED = (
    Path.home() / ".local/share/lepton/datasets/dslabs/usr/lib/R/site-library/dslabs/data",
    Path("/usr/lib/R/site-library/dslabs/data"),
)
_cache: dict[tuple[str, int, int], Ratings] = {}


@dataclass(frozen=True)
class Ratings:
    """A table of ratings: ``user``, ``item``, ``rating``, ``timestamp`` (one row each),
    plus an optional item table (``item_ids`` with ``titles``, ``years``, ``genres``).

    Columns are NumPy arrays; ``iter(ratings)`` yields ``(user, item, rating)`` rows, so a
    ``Ratings`` goes wherever a table of triples does.
    """

    user: np.ndarray
    item: np.ndarray
    rating: np.ndarray
    timestamp: np.ndarray
    name: str = "ratings"
    item_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    titles: tuple[str, ...] = ()
    years: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    genres: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.rating)

    def __iter__(self) -> Any:
        return zip(self.user.tolist(), self.item.tolist(), self.rating.tolist(), strict=True)

    @property
    def n_users(self) -> int:
        """Number of distinct users."""
        return len(np.unique(self.user))

    @property
    def n_items(self) -> int:
        """Number of distinct rated items."""
        return len(np.unique(self.item))

    def take(self, rows: np.ndarray) -> Ratings:
        """The rows at ``rows`` (indices or a boolean mask), with the same item table."""
        return Ratings(
            self.user[rows], self.item[rows], self.rating[rows], self.timestamp[rows],
            self.name, self.item_ids, self.titles, self.years, self.genres,
        )  # fmt: skip

    def split(self, test_size: float = 0.2, *, seed: int = 0) -> tuple[Ratings, Ratings]:
        """A random split of the rows: ``(train, test)``, the same for the same seed."""
        _check_fraction(test_size)
        order = np.random.default_rng(seed).permutation(len(self))
        n_test = round(test_size * len(self))
        return self.take(np.sort(order[n_test:])), self.take(np.sort(order[:n_test]))

    def temporal_split(self, test_size: float = 0.2) -> tuple[Ratings, Ratings]:
        """Per user, the latest ``test_size`` of their ratings go to test (at least one,
        when they have two or more): the evaluation that does not let a model see the
        future. Ties in time are broken by row order, so the split is deterministic."""
        _check_fraction(test_size)
        order = np.lexsort((np.arange(len(self)), self.timestamp, self.user))
        users = self.user[order]
        starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
        counts = np.diff(np.r_[starts, len(users)])
        rank = np.arange(len(users)) - np.repeat(starts, counts)  # 0 = a user's oldest
        n_test = np.where(counts >= 2, np.maximum(1, np.round(counts * test_size)), 0)
        is_test = np.zeros(len(self), dtype=bool)
        is_test[order] = rank >= np.repeat(counts - n_test, counts)
        return self.take(~is_test), self.take(is_test)

    def item_table(self) -> dict[int, tuple[str, int, str]]:
        """``{item_id: (title, year, genres)}`` (year ``-1`` when unknown)."""
        return {
            int(i): (t, int(y), g)
            for i, t, y, g in zip(self.item_ids, self.titles, self.years, self.genres, strict=True)
        }

    def fingerprint(self) -> str:
        """SHA-256 of the content (ratings and item table): equal data, equal print."""
        return _content_digest(self)

    def describe(self) -> dict[str, Any]:
        """Sizes and per-column statistics, JSON-safe (the shape ``lepton data show``
        prints for any dataset)."""

        def summary(a: np.ndarray) -> dict[str, float]:
            a = a.astype(np.float64)
            return {"mean": float(a.mean()), "std": float(a.std()),
                    "min": float(a.min()), "max": float(a.max())}  # fmt: skip

        return {
            "name": self.name, "rows": len(self), "input_shape": [2], "dtype": "int64",
            "task": "ratings", "num_classes": None, "missing": 0,
            "users": self.n_users, "items": self.n_items,
            "features": {"rating": summary(self.rating), "timestamp": summary(self.timestamp)},
            "fingerprint": self.fingerprint(),
        }  # fmt: skip

    def to_pandas(self) -> Any:
        """The ratings as a pandas DataFrame (needs pandas)."""
        import importlib

        pd: Any = importlib.import_module("pandas")
        return pd.DataFrame(
            {"user": self.user, "item": self.item, "rating": self.rating,
             "timestamp": self.timestamp}
        )  # fmt: skip


def _check_fraction(test_size: float) -> None:
    if not 0.0 < test_size < 1.0:
        raise DataError(f"test_size must be between 0 and 1 (exclusive), got {test_size}")


def _has_files(folder: Path) -> bool:
    return (folder / "movielens.rda").is_file() or (
        (folder / "Rdata.rdb").is_file() and (folder / "Rdata.rdx").is_file()
    )


def locate_movielens(path: Path | None) -> Path | None:
    """The folder the data would be read from, or ``None``."""
    if path is not None:
        return path if _has_files(path) else None
    data_dir = get_settings().data_dir
    candidates = ([data_dir / "movielens"] if data_dir is not None else []) + list(_PACKAGED)
    return next((c for c in candidates if _has_files(c)), None)


def _rdata() -> Any:
    try:
        import rdata
    except ImportError:
        raise DataSourceMissingError(
            "reading MovieLens needs PyPI rdata: pip install 'lepton[recommend]'"
        ) from None
    return rdata


def _read_frame(folder: Path) -> Any:
    rdata = _rdata()
    rda = folder / "movielens.rda"
    try:
        if rda.is_file():
            return rdata.conversion.convert(rdata.parser.parse_file(rda))["movielens"]
        index = rdata.conversion.convert(
            rdata.parser.parse_data((folder / "Rdata.rdx").read_bytes(), extension=".rds")
        )
        if "movielens" not in index["variables"]:
            raise DataFormatError(f"{folder}/Rdata.rdb holds no 'movielens' object")
        offset, length = (int(v) for v in index["variables"]["movielens"])
        with open(folder / "Rdata.rdb", "rb") as handle:
            handle.seek(offset)
            chunk = handle.read(length)
        size = struct.unpack(">I", chunk[:4])[0]
        raw = zlib.decompress(chunk[4:])
        if len(raw) != size:
            raise DataFormatError(f"{folder}/Rdata.rdb: the movielens object is truncated")
        return rdata.conversion.convert(rdata.parser.parse_data(raw, extension=".rds"))
    except (DataFormatError, DataSourceMissingError):
        raise
    except Exception as exc:  # rdata, zlib and struct raise their own kinds
        raise DataFormatError(
            f"{folder} does not hold a readable dslabs movielens object ({exc}); it is "
            f"corrupt: delete it and {HOW_TO_GET}"
        ) from None


def _content_digest(r: Ratings) -> str:
    h = hashlib.sha256()
    for arr, dtype in ((r.user, "<i4"), (r.item, "<i4"), (r.rating, "<f8"), (r.timestamp, "<i8")):
        h.update(np.ascontiguousarray(arr, dtype=dtype).tobytes())
    h.update(np.ascontiguousarray(r.item_ids, dtype="<i4").tobytes())
    h.update("\n".join(f"{t}\t{g}" for t, g in zip(r.titles, r.genres, strict=True)).encode())
    return h.hexdigest()


def _to_ratings(df: Any) -> Ratings:
    missing = {"userId", "movieId", "rating", "timestamp", "title", "year", "genres"} - set(
        df.columns
    )
    if missing:
        raise DataFormatError(f"the movielens table lacks columns {sorted(missing)}")
    item = df["movieId"].to_numpy("int64")
    ids, first = np.unique(item, return_index=True)
    titles = df["title"].astype(object).to_numpy()[first]
    years = df["year"].astype("float64").to_numpy()[first]
    genres = df["genres"].astype(object).to_numpy()[first]
    return Ratings(
        user=df["userId"].to_numpy("int64"),
        item=item,
        rating=df["rating"].to_numpy("float32"),
        timestamp=df["timestamp"].astype("int64").to_numpy(),
        name="movielens",
        item_ids=ids,
        titles=tuple("" if not isinstance(t, str) else t for t in titles),
        years=np.where(np.isnan(years), -1, years).astype(np.int64),
        genres=tuple("" if not isinstance(g, str) else g for g in genres),
    )


def load_movielens(path: Path | None = None) -> Ratings:
    """Read and verify ml-latest-small (cached per process: parsing takes seconds)."""
    folder = locate_movielens(path)
    if folder is None:
        where = f"{path}" if path is not None else "LEPTON_DATA_DIR or the packaged source"
        raise DataSourceMissingError(f"the movielens files are not in {where}; {HOW_TO_GET}")
    main = folder / ("movielens.rda" if (folder / "movielens.rda").is_file() else "Rdata.rdb")
    st = main.stat()
    key = (str(main), st.st_size, st.st_mtime_ns)
    if key not in _cache:
        ratings = _to_ratings(_read_frame(folder))
        digest = _content_digest(ratings)
        if digest != MOVIELENS_SHA256:
            raise ChecksumError(
                f"{main} does not hold the published ml-latest-small (content sha256 "
                f"{digest[:16]}...); it is corrupt or another version: delete it and "
                f"{HOW_TO_GET}"
            )
        _cache[key] = ratings
    return _cache[key]
