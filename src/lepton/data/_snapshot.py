"""A dataset as stored bytes, and what can be said of it without a model: its schema, its
statistics, and a digest per row (what a diff compares).

Tables (2-D features, one target per row) are written as Parquet when pyarrow is
installed, so other tools can read them; everything else (images, tensors) as ``.npz``.
Either way :func:`decode` gives back the same tensors, bit for bit, so a version's
fingerprint survives the round trip. Nothing is ever unpickled.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
from collections import Counter
from typing import Any

import numpy as np

from lepton.data._dataset import Dataset
from lepton.errors import DataError, DataFormatError

__all__ = [
    "compare_rows", "compare_schema", "decode", "encode", "row_digests", "schema_of", "stats_of",
]  # fmt: skip

_TARGET = "target"


def _meta(ds: Dataset) -> dict[str, Any]:
    return {
        "name": ds.name,
        "task": ds.task,
        "classes": ds.classes,
        "feature_names": ds.feature_names,
        "preprocessing": ds.preprocessing,
    }


def _is_table(ds: Dataset) -> bool:
    return ds.features.dim() == 2 and (ds.targets is None or ds.targets.dim() == 1)


def _column_names(ds: Dataset) -> list[str]:
    return list(ds.feature_names or [f"x{i}" for i in range(ds.features.shape[1])])


def encode(ds: Dataset) -> tuple[str, bytes]:
    """``("parquet" | "npz", bytes)`` holding every tensor and what describes them."""
    meta = _meta(ds)
    names = _column_names(ds) if _is_table(ds) else []
    if names and len(set(names)) == len(names):
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            pass
        else:
            x = ds.features.numpy()
            columns = {n: np.ascontiguousarray(x[:, i]) for i, n in enumerate(names)}
            target = _TARGET if _TARGET not in columns else "__target__"
            if ds.targets is not None:
                columns[target] = ds.targets.numpy()
            meta["target_column"] = target if ds.targets is not None else None
            table = pa.table(columns).replace_schema_metadata({"lepton": json.dumps(meta)})
            buffer = io.BytesIO()
            pq.write_table(table, buffer)
            return "parquet", buffer.getvalue()
    arrays = {"features": ds.features.numpy(), "meta": np.array(json.dumps(meta))}
    if ds.targets is not None:
        arrays["targets"] = ds.targets.numpy()
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # type: ignore[arg-type]
    return "npz", buffer.getvalue()


def decode(fmt: str, payload: bytes) -> Dataset:
    """The dataset :func:`encode` wrote."""
    if fmt == "parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise DataError(
                "this version is stored as Parquet, which needs pyarrow: "
                "pip install 'lepton[parquet]'"
            ) from None

        table = pq.read_table(io.BytesIO(payload))
        meta = json.loads((table.schema.metadata or {})[b"lepton"])
        target = meta.get("target_column")
        names = [n for n in table.column_names if n != target]
        x = np.stack([table.column(n).to_numpy() for n in names], axis=1)
        y = table.column(target).to_numpy() if target else None
    elif fmt == "npz":
        with np.load(io.BytesIO(payload), allow_pickle=False) as archive:
            x = archive["features"]
            y = archive["targets"] if "targets" in archive.files else None
            meta = json.loads(str(archive["meta"]))
    else:
        raise DataFormatError(f"unknown stored dataset format {fmt!r}; expected npz or parquet")
    return Dataset(
        x,
        y,
        name=meta.get("name") or "dataset",
        task=meta.get("task"),
        classes=meta.get("classes"),
        feature_names=meta.get("feature_names"),
        preprocessing=meta.get("preprocessing") or (),
    )


def _dtype(tensor: Any) -> str:
    return str(tensor.dtype).replace("torch.", "")


def schema_of(ds: Dataset) -> dict[str, Any]:
    """Columns (tables) or the sample shape (tensors), dtypes, task and classes."""
    out: dict[str, Any] = {
        "kind": "table" if _is_table(ds) else "tensor",
        "features": {"shape": list(ds.input_shape), "dtype": _dtype(ds.features)},
        "target": None,
        "task": ds.task,
        "classes": ds.classes,
        "preprocessing": ds.preprocessing,
    }
    if _is_table(ds):
        out["columns"] = [{"name": n, "dtype": _dtype(ds.features)} for n in _column_names(ds)]
    if ds.targets is not None:
        out["target"] = {"shape": list(ds.targets.shape[1:]), "dtype": _dtype(ds.targets)}
    return out


def _finite(value: Any) -> Any:
    """JSON-safe (no NaN/inf: PostgreSQL's JSON refuses them)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def stats_of(ds: Dataset) -> dict[str, Any]:
    """The dataset's profile (:meth:`Dataset.describe`), JSON-safe."""
    described = ds.describe()
    described.pop("fingerprint", None)
    described.pop("name", None)
    return dict(_finite(described))


def row_digests(ds: Dataset) -> list[bytes]:
    """A 16-byte BLAKE2b digest of each row (features and target together)."""
    x = np.ascontiguousarray(ds.features.numpy()).reshape(len(ds), -1)
    y = ds.targets.numpy().reshape(len(ds), -1) if ds.targets is not None else None
    out = []
    for i in range(len(ds)):
        digest = hashlib.blake2b(x[i].tobytes(), digest_size=16)
        if y is not None:
            digest.update(y[i].tobytes())
        out.append(digest.digest())
    return out


def compare_rows(a: Dataset, b: Dataset, *, examples: int = 20) -> dict[str, Any]:
    """Rows of ``b`` not in ``a`` (added) and of ``a`` not in ``b`` (removed), by digest,
    counting repeats (a row twice in ``a`` and once in ``b`` is one removed)."""
    da, db = row_digests(a), row_digests(b)
    left, right = Counter(da), Counter(db)
    extra_b, extra_a = right - left, left - right

    def positions(digests: list[bytes], extra: Counter[bytes]) -> list[int]:
        pending, found = Counter(extra), []
        for i in range(len(digests) - 1, -1, -1):  # the last repeats are the new ones
            if pending[digests[i]] > 0:
                pending[digests[i]] -= 1
                found.append(i)
        return sorted(found)[:examples]

    added, removed = sum(extra_b.values()), sum(extra_a.values())
    return {
        "rows_a": len(a),
        "rows_b": len(b),
        "added": added,
        "removed": removed,
        "unchanged": len(b) - added,
        "added_rows": positions(db, extra_b),
        "removed_rows": positions(da, extra_a),
    }


def compare_schema(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """What differs between two :func:`schema_of`, one sentence per change."""
    changes: list[str] = []
    if a.get("kind") != b.get("kind"):
        changes.append(f"kind {a.get('kind')} -> {b.get('kind')}")
    cols_a = {c["name"]: c["dtype"] for c in a.get("columns") or []}
    cols_b = {c["name"]: c["dtype"] for c in b.get("columns") or []}
    changes += [f"column {n!r} added ({t})" for n, t in cols_b.items() if n not in cols_a]
    changes += [f"column {n!r} removed" for n in cols_a if n not in cols_b]
    changes += [
        f"column {n!r} dtype {cols_a[n]} -> {t}"
        for n, t in cols_b.items()
        if n in cols_a and cols_a[n] != t
    ]
    fa, fb = a.get("features") or {}, b.get("features") or {}
    if not (cols_a or cols_b) and fa.get("shape") != fb.get("shape"):
        changes.append(f"sample shape {fa.get('shape')} -> {fb.get('shape')}")
    if fa.get("dtype") != fb.get("dtype") and not (cols_a or cols_b):
        changes.append(f"features dtype {fa.get('dtype')} -> {fb.get('dtype')}")
    for key in ("task", "target"):
        if a.get(key) != b.get(key):
            changes.append(f"{key} {a.get(key)} -> {b.get(key)}")
    ca, cb = a.get("classes") or [], b.get("classes") or []
    if ca != cb:
        new = [c for c in cb if c not in ca]
        gone = [c for c in ca if c not in cb]
        changes.append(
            f"classes changed (added {new or 'none'}, removed {gone or 'none'})"
            if new or gone
            else "classes reordered"
        )
    return changes
