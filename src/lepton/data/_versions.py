"""Versioned datasets: ``register`` a dataset under a name as an immutable, content-addressed
version, ``load("name@3")`` it back bit for bit, list its ``versions`` (``diff`` of two is
in :mod:`lepton.data._diff`).

The data layer stands on the leaves alone, so it does not open the database or the
artifact store itself: a :class:`VersionStore` does (``lepton.storage``'s
``DatasetVersionStore``, which ``import lepton`` puts in place), and a diff's distribution
tests come from :func:`lepton.monitor.drift`, put in place the same way. Pass ``store=``
(the platform passes its own database) or ``compare=`` to use others.

Example:
    >>> import lepton as lp
    >>> iris = lp.data.load("iris", split="all")  # doctest: +SKIP
    >>> v1 = lp.data.register(iris, "iris-clean")  # doctest: +SKIP
    >>> lp.data.load("iris-clean@1").fingerprint() == iris.fingerprint()  # doctest: +SKIP
    True
"""

from __future__ import annotations

import getpass
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from lepton._hooks import DEFAULTS
from lepton.data._clean import CleanReport
from lepton.data._dataset import Dataset
from lepton.data._snapshot import decode, encode, schema_of, stats_of
from lepton.errors import ConfigError, DataError, DatasetNotFoundError

__all__ = [
    "Compare",
    "DatasetVersion",
    "VersionStore",
    "default_compare",
    "install",
    "load_version",
    "parse_ref",
    "register",
    "version",
    "versions",
]

_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,99}")
_REF = re.compile(r"(?P<name>[a-z0-9][a-z0-9._-]{0,99})@(?P<version>\d+|latest)")
Compare = Callable[[Dataset, Dataset], Mapping[str, Any]]


class VersionStore(Protocol):
    """Where versions are kept (``lepton.storage.DatasetVersionStore`` is one); records
    are JSON-safe dicts with the fields of :class:`DatasetVersion`."""

    def find(self, name: str, fingerprint: str) -> dict[str, Any] | None: ...
    def add(self, record: Mapping[str, Any], payload: bytes) -> tuple[dict[str, Any], bool]: ...
    def get(self, name: str, version: int | None = None) -> dict[str, Any]: ...
    def versions(self, name: str) -> list[dict[str, Any]]: ...
    def read(self, record: Mapping[str, Any]) -> bytes: ...
    def uses(self, fingerprints: Sequence[str]) -> list[dict[str, Any]]: ...


_DEFAULTS: dict[str, Callable[..., Any]] = DEFAULTS  # filled by `import lepton`


def install(
    *, store: Callable[[], VersionStore] | None = None, compare: Compare | None = None
) -> None:
    """Put the default store factory and distribution comparison in place (``import
    lepton`` does, with the storage layer's store and :func:`lepton.monitor.drift`)."""
    if store is not None:
        _DEFAULTS["store"] = store
    if compare is not None:
        _DEFAULTS["compare"] = compare


def default_compare() -> Compare | None:
    """The distribution comparison in place (``lp.monitor.drift`` after ``import lepton``)."""
    found: Compare | None = _DEFAULTS.get("compare")
    return found


def _store(store: VersionStore | None) -> VersionStore:
    if store is not None:
        return store
    factory = _DEFAULTS.get("store")
    if factory is None:
        raise ConfigError(
            "no dataset version store is in place; `import lepton` puts one in place, or "
            "pass store=lepton.storage.DatasetVersionStore()"
        )
    made: VersionStore = factory()
    return made


@dataclass(frozen=True)
class DatasetVersion:
    """One immutable version of a named dataset.

    Attributes:
        name: The dataset's name.
        version: 1, 2, ... in registration order.
        fingerprint: The content's key (:meth:`Dataset.fingerprint`).
        format: How it is stored: ``"parquet"`` (tables) or ``"npz"``.
        rows: Number of rows.
        size: Stored bytes.
        schema: Columns or sample shape, dtypes, task, classes and preprocessing.
        stats: The profile (:meth:`Dataset.describe`).
        derived_from: The version it was made from (``"name@N"``), if any.
        steps: The cleaning or preprocessing steps that made it from ``derived_from``.
        used_by: The runs and model versions that used this content (lineage).
    """

    name: str
    version: int
    fingerprint: str
    format: str
    rows: int
    size: int
    schema: dict[str, Any]
    stats: dict[str, Any]
    derived_from: str | None
    steps: list[Any]
    created_at: float
    created_by: str
    artifact: str
    used_by: tuple[dict[str, Any], ...] = field(default=())

    @property
    def ref(self) -> str:
        """``"name@version"``, what :func:`lepton.data.load` takes."""
        return f"{self.name}@{self.version}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form."""
        return {**self.__dict__, "used_by": list(self.used_by), "ref": self.ref}


def _frozen(record: Mapping[str, Any], uses: Sequence[Mapping[str, Any]] = ()) -> DatasetVersion:
    fields = {k: record[k] for k in DatasetVersion.__dataclass_fields__ if k in record}
    return DatasetVersion(**{**fields, "used_by": tuple(dict(u) for u in uses)})


def parse_ref(ref: str) -> tuple[str, int | None]:
    """``"name@3"`` -> ``("name", 3)``; ``"name@latest"`` -> ``("name", None)``."""
    match = _REF.fullmatch(ref.strip()) if isinstance(ref, str) else None
    if match is None:
        raise DatasetNotFoundError(
            f"bad dataset version reference {ref!r}; use 'name@VERSION' or 'name@latest' "
            f"(e.g. 'iris-clean@2')"
        )
    version = match["version"]
    return match["name"], None if version == "latest" else int(version)


def _steps(
    dataset: Dataset, steps: Sequence[Mapping[str, Any]] | CleanReport | None, parent: Any
) -> list[Any]:
    if isinstance(steps, CleanReport):
        return [{"op": "clean", **steps.to_dict()}]
    if steps is not None:
        return [dict(s) for s in steps]
    if parent is None:
        return []
    before = list(parent.schema.get("preprocessing") or [])
    after = list(dataset.preprocessing)
    return after[len(before) :] if after[: len(before)] == before else after


def register(
    dataset: Dataset,
    name: str,
    *,
    derived_from: str | DatasetVersion | None = None,
    steps: Sequence[Mapping[str, Any]] | CleanReport | None = None,
    store: VersionStore | None = None,
    created_by: str | None = None,
) -> DatasetVersion:
    """Store ``dataset`` as a version of ``name``; the same content is always the same
    version (registering it again returns the existing one).

    Args:
        dataset: A :class:`Dataset` (tables are stored as Parquet, tensors as npz).
        name: 1-100 lowercase letters, digits, ``.``, ``_`` or ``-``.
        derived_from: The version it was made from (``"name@N"`` or a
            :class:`DatasetVersion`), recorded as lineage.
        steps: How it was made from ``derived_from``: a :class:`CleanReport`, or a list of
            JSON-safe steps (default: the preprocessing steps it has beyond the parent's).
        store: Where to keep it (default: the metadata database and artifact store).
        created_by: Who registers it (default: this OS user).

    Returns:
        The :class:`DatasetVersion` (new, or the existing one with this content).

    Example:
        >>> cleaned, report = lp.data.clean(raw)  # doctest: +SKIP
        >>> v2 = lp.data.register(
        ...     cleaned, "adult", derived_from="adult@1", steps=report
        ... )  # doctest: +SKIP
    """
    if not isinstance(dataset, Dataset):
        raise DataError(
            f"register() takes a lepton Dataset, got {type(dataset).__name__}; build one with "
            f"lp.data.from_arrays / from_csv / load(path)"
        )
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise DataError(
            f"invalid dataset name {name!r}: use 1-100 lowercase letters, digits, '.', '_' or "
            f"'-', starting with a letter or digit (e.g. 'iris-clean')"
        )
    target = _store(store)
    parent: DatasetVersion | None = None
    if derived_from is not None:
        parent = (
            derived_from
            if isinstance(derived_from, DatasetVersion)
            else _frozen(target.get(*parse_ref(derived_from)))
        )
    fingerprint = dataset.fingerprint()
    existing = target.find(name, fingerprint)
    if existing is not None:
        return _with_uses(target, existing)
    fmt, payload = encode(dataset)
    record = {
        "name": name,
        "fingerprint": fingerprint,
        "format": fmt,
        "rows": len(dataset),
        "schema": schema_of(dataset),
        "stats": stats_of(dataset),
        "derived_from": parent.ref if parent is not None else None,
        "steps": _steps(dataset, steps, parent),
        "created_by": (created_by or _user())[:64],
    }
    stored, _ = target.add(record, payload)
    return _with_uses(target, stored)


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _with_uses(store: VersionStore, record: Mapping[str, Any]) -> DatasetVersion:
    return _frozen(record, store.uses([str(record["fingerprint"])]))


def version(ref: str, *, store: VersionStore | None = None) -> DatasetVersion:
    """The :class:`DatasetVersion` ``ref`` names (``"name@3"``, ``"name@latest"``), with its
    lineage."""
    target = _store(store)
    return _with_uses(target, target.get(*parse_ref(ref)))


def load_version(ref: str, *, store: VersionStore | None = None) -> Dataset:
    """The dataset of version ``ref`` (``"name@3"`` or ``"name@latest"``), exactly as it was
    registered (same tensors, same fingerprint)."""
    target = _store(store)
    record = target.get(*parse_ref(ref))
    return decode(str(record["format"]), target.read(record))


def versions(name: str, *, store: VersionStore | None = None) -> list[DatasetVersion]:
    """Every version of ``name``, oldest first, with lineage.

    Raises:
        DatasetNotFoundError: No dataset of that name was registered.
    """
    target = _store(store)
    records = target.versions(name)
    if not records:
        target.get(name)  # raises the "no registered dataset" message
    uses = target.uses(sorted({str(r["fingerprint"]) for r in records}))
    return [_frozen(r, [u for u in uses if u["fingerprint"] == r["fingerprint"]]) for r in records]
