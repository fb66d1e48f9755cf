"""``Dataset``: features and targets as tensors, with the operations ML work needs."""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeGuard

import numpy as np
import torch

from lepton._fs import atomic_write
from lepton.data._stats import Axis, Stats, compute_stats, summarize
from lepton.errors import DataFormatError, EmptyDatasetError, LabelError

__all__ = ["Dataset", "Task"]

Task = Literal["classification", "regression"]
Transform = Callable[[torch.Tensor], torch.Tensor]


def _as_tensor(values: torch.Tensor | np.ndarray | Sequence[Any], what: str) -> torch.Tensor:
    """Zero-copy from numpy when possible (read-only arrays are mapped copy-on-write)."""
    if isinstance(values, torch.Tensor):
        return values
    # np.asarray would drop the memmap subclass (and with it the file to re-map).
    array = values if isinstance(values, np.ndarray) else np.asarray(values)
    if array.dtype == object or array.dtype.kind in "USV":
        error = LabelError if what == "targets" else DataFormatError
        raise error(
            f"{what} must be numeric, got dtype {array.dtype}; encode strings first, labels as "
            f"0..K-1 (e.g. np.unique(y, return_inverse=True)[1]); the CSV/Parquet loaders "
            f"encode a string target column as classes for you"
        )
    if _whole_memmap(array) and not array.flags.writeable:
        array = np.memmap(
            str(array.filename),
            dtype=array.dtype,
            mode="c",
            shape=array.shape,
            offset=int(array.offset),
        )
    elif not array.flags.writeable:
        array = array.copy()
    if array.dtype.byteorder == ">":
        array = array.astype(array.dtype.newbyteorder("="))
    if any(stride < 0 for stride in array.strides):  # torch cannot view reversed arrays
        array = np.ascontiguousarray(array)
    return torch.from_numpy(array)


def _whole_memmap(array: np.ndarray) -> TypeGuard[np.memmap[Any, Any]]:
    """A memmap that can be re-mapped as is: a view of the whole mapping up to EOF.

    Slices of a memmap keep the parent's ``offset``, so only a contiguous view reaching the
    end of the file is known to start at ``offset``.
    """
    if not isinstance(array, np.memmap) or array.filename is None:
        return False
    try:
        size = Path(array.filename).stat().st_size
    except OSError:
        return False
    return bool(array.flags.c_contiguous) and int(array.offset) + array.nbytes == size


def _check_targets(
    targets: torch.Tensor, task: Task, name: str, features: torch.Tensor | None = None
) -> torch.Tensor:
    if task == "regression":
        return targets if targets.dtype == torch.float32 else targets.float()
    # one label per position of (N, T) token ids (a language model's next tokens) is fine
    per_position = (
        features is not None
        and targets.dim() == 2
        and not features.is_floating_point()
        and tuple(targets.shape) == tuple(features.shape)
    )
    if targets.dim() != 1 and not per_position:
        raise LabelError(
            f"classification targets of {name!r} must be one label per sample (N,), got shape "
            f"{tuple(targets.shape)}; pass task='regression' for multi-output targets (one "
            f"label per position needs (N, T) integer token ids of the same shape)"
        )
    if targets.is_floating_point():
        if not torch.all(targets == targets.round()) or torch.isnan(targets).any():
            raise LabelError(
                f"targets of {name!r} are non-integer floats; pass task='regression', or "
                f"encode class labels as integers 0..K-1"
            )
        targets = targets.long()
    if targets.dtype == torch.bool:
        targets = targets.long()
    if targets.dtype != torch.int64:
        targets = targets.long()
    if len(targets) and int(targets.min()) < 0:
        raise LabelError(
            f"targets of {name!r} contain negative class {int(targets.min())}; encode class "
            f"labels as 0..K-1 (e.g. np.unique(y, return_inverse=True)[1])"
        )
    return targets


class Dataset:
    """Features and targets held as tensors (zero-copy from numpy).

    Every transforming method returns a new ``Dataset``; the original is never changed.

    Args:
        features: ``(N, ...)`` array or tensor.
        targets: ``(N,)`` labels (classification) or ``(N,)`` / ``(N, k)`` values
            (regression); ``None`` for unlabelled data. Integer token ids ``(N, T)`` may
            have one label per position, ``(N, T)`` (a language model's next tokens).
        name: A short name shown in messages and reports.
        task: ``"classification"`` or ``"regression"``; inferred from the target dtype
            (integers -> classification) when ``None``.
        classes: Class names for classification (default ``"0"``, ``"1"``, ...).
        feature_names: Names of tabular features.
        transform: Applied to every feature batch by :meth:`batches` (e.g. augmentation).
        preprocessing: JSON-safe record of the steps already applied to the features.

    Example:
        >>> ds = Dataset(np.random.rand(100, 4).astype("float32"), np.arange(100) % 2)
        >>> train, test = ds.split(test_size=0.2, seed=0)
        >>> len(train), len(test)
        (80, 20)
    """

    def __init__(
        self,
        features: torch.Tensor | np.ndarray | Sequence[Any],
        targets: torch.Tensor | np.ndarray | Sequence[Any] | None = None,
        *,
        name: str = "dataset",
        task: Task | None = None,
        classes: Sequence[str] | None = None,
        feature_names: Sequence[str] | None = None,
        transform: Transform | None = None,
        preprocessing: Sequence[Mapping[str, Any]] = (),
        stats: Stats | None = None,
    ) -> None:
        x = _as_tensor(features, "features")
        if x.dim() == 0 or len(x) == 0:
            raise EmptyDatasetError(
                f"dataset {name!r} has no rows; check the file or filter that produced it"
            )
        y: torch.Tensor | None = None
        if targets is not None:
            y = _as_tensor(targets, "targets")
            if len(y) != len(x):
                raise DataFormatError(
                    f"dataset {name!r} has {len(x)} feature rows but {len(y)} targets; they must "
                    f"have one target per row"
                )
            if task is None:
                task = "regression" if y.is_floating_point() else "classification"
            if task not in ("classification", "regression"):
                raise LabelError(f"task must be 'classification' or 'regression', got {task!r}")
            y = _check_targets(y, task, name, x)
        else:
            task = None
        self.features = x
        self.targets = y
        self.name = name
        self.task: Task | None = task
        self.classes: list[str] | None = None
        if task == "classification":
            assert y is not None
            top = int(y.max()) + 1
            if classes is not None and len(classes) < top:
                raise LabelError(
                    f"dataset {name!r} has label {top - 1} but only {len(classes)} class names; "
                    f"pass one name per class"
                )
            self.classes = (
                [str(c) for c in classes] if classes is not None else [str(i) for i in range(top)]
            )
        self.feature_names = list(feature_names) if feature_names is not None else None
        self.transform = transform
        self.preprocessing: list[dict[str, Any]] = [dict(p) for p in preprocessing]
        self.stats = stats
        self._fingerprint: str | None = None

    # -- basics --------------------------------------------------------------------------
    @property
    def num_classes(self) -> int | None:
        """Number of classes (classification only)."""
        return len(self.classes) if self.classes is not None else None

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one sample's features."""
        return tuple(self.features.shape[1:])

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.targets[index] if self.targets is not None else torch.empty(0)
        return self.features[index], y

    def __repr__(self) -> str:
        extra = f", classes={self.num_classes}" if self.classes is not None else ""
        return (
            f"Dataset({self.name!r}, rows={len(self)}, input_shape={self.input_shape}, "
            f"task={self.task}{extra})"
        )

    def _derive(
        self, features: torch.Tensor, targets: torch.Tensor | None, **changes: Any
    ) -> Dataset:
        kw: dict[str, Any] = {
            "name": self.name,
            "task": self.task,
            "classes": self.classes,
            "feature_names": self.feature_names,
            "transform": self.transform,
            "preprocessing": self.preprocessing,
            "stats": self.stats,
        }
        kw.update(changes)
        return Dataset(features, targets, **kw)

    def subset(self, indices: Sequence[int] | torch.Tensor | slice) -> Dataset:
        """The rows at ``indices`` (a slice keeps memory shared)."""
        if isinstance(indices, slice):
            x = self.features[indices]
            y = self.targets[indices] if self.targets is not None else None
        else:
            idx = torch.as_tensor(indices, dtype=torch.int64)
            x = self.features.index_select(0, idx)
            y = self.targets.index_select(0, idx) if self.targets is not None else None
        return self._derive(x, y)

    def batches(
        self,
        batch_size: int,
        *,
        shuffle: bool = False,
        generator: torch.Generator | None = None,
        drop_last: bool = False,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        """Yield ``(features, targets)`` batches, indexed in bulk (no per-sample loop).

        Args:
            batch_size: Rows per batch.
            shuffle: Visit rows in ``torch.randperm`` order (else plain, zero-copy slices).
            generator: Seeded generator for a reproducible shuffle.
            drop_last: Skip the final, smaller batch.
        """
        if batch_size < 1:
            raise DataFormatError(f"batch_size must be a positive integer, got {batch_size}")
        n = len(self)
        stop = n - n % batch_size if drop_last else n
        order = torch.randperm(n, generator=generator) if shuffle else None
        for start in range(0, stop, batch_size):
            if order is None:
                xb = self.features[start : start + batch_size]
                yb = self.targets[start : start + batch_size] if self.targets is not None else None
            else:
                idx = order[start : start + batch_size]
                xb = self.features[idx]
                yb = self.targets[idx] if self.targets is not None else None
            yield (self.transform(xb) if self.transform is not None else xb), yb

    # -- transformations -----------------------------------------------------------------
    def split(
        self, test_size: float = 0.2, *, seed: int = 0, stratify: bool | None = None
    ) -> tuple[Dataset, Dataset]:
        """Split into ``(train, test)``, stratified by class for classification.

        Args:
            test_size: Fraction of rows for the second part, in (0, 1).
            seed: The same seed always gives the same split.
            stratify: Keep class proportions (default: True for classification).
        """
        if not 0 < test_size < 1:
            raise DataFormatError(f"test_size must be in (0, 1), got {test_size}; e.g. 0.2")
        gen = torch.Generator().manual_seed(seed)
        one_label = self.targets is not None and self.targets.dim() == 1
        stratify = self.task == "classification" and one_label if stratify is None else stratify
        if stratify and self.task != "classification":
            raise LabelError("stratify=True needs classification targets; pass stratify=False")
        if stratify:
            assert self.targets is not None
            test_parts = []
            for cls in torch.unique(self.targets):
                members = torch.nonzero(self.targets == cls).flatten()
                members = members[torch.randperm(len(members), generator=gen)]
                test_parts.append(members[: round(len(members) * test_size)])
            test_idx = torch.cat(test_parts)
        else:
            test_idx = torch.randperm(len(self), generator=gen)[: round(len(self) * test_size)]
        mask = torch.ones(len(self), dtype=torch.bool)
        mask[test_idx] = False
        if mask.all() or not mask.any():
            raise EmptyDatasetError(
                f"splitting {len(self)} rows with test_size={test_size} leaves one part empty; "
                f"use more data or another test_size"
            )
        train_idx = torch.nonzero(mask).flatten()
        return self.subset(train_idx), self.subset(torch.sort(test_idx).values)

    def map(self, fn: Transform, *, batch_size: int = 4096) -> Dataset:
        """Apply ``fn`` to the features now, in chunks, and return the result."""
        chunks = [fn(self.features[i : i + batch_size]) for i in range(0, len(self), batch_size)]
        return self._derive(torch.cat(chunks), self.targets)

    def with_transform(self, fn: Transform | None) -> Dataset:
        """The same data with a per-batch ``transform`` (applied lazily by :meth:`batches`)."""
        return self._derive(self.features, self.targets, transform=fn)

    def _normalised(self, stats: Stats) -> Dataset:
        return self._derive(
            stats.apply(self.features),
            self.targets,
            stats=stats,
            preprocessing=[*self.preprocessing, stats.to_dict()],
        )

    def standardize(self, stats: Stats | None = None, *, axis: Axis = "feature") -> Dataset:
        """Z-score the features: ``(x - mean) / std``.

        Args:
            stats: Statistics to apply (the training split's ``.stats``); ``None``
                computes them from this dataset.
            axis: ``"feature"``, ``"channel"`` (images) or ``"global"``.
        """
        if stats is None:
            stats = compute_stats(self.features, "standardize", axis)
        return self._normalised(stats)

    def normalize(self, stats: Stats | None = None, *, axis: Axis = "feature") -> Dataset:
        """Min-max scale the features to [0, 1] (with the training split's ``stats``)."""
        if stats is None:
            stats = compute_stats(self.features, "minmax", axis)
        return self._normalised(stats)

    # -- identity and inspection ---------------------------------------------------------
    def fingerprint(self) -> str:
        """Content hash (``"sha256:..."``) of features, targets and class names."""
        if self._fingerprint is None:
            digest = hashlib.sha256()
            for tensor in (self.features, self.targets):
                if tensor is None:
                    digest.update(b"none")
                    continue
                t = tensor.detach().cpu().contiguous()
                digest.update(f"{t.dtype}{tuple(t.shape)}".encode())
                digest.update((t.view(torch.uint8) if t.dim() else t).numpy().data)
            digest.update(json.dumps(self.classes).encode())
            self._fingerprint = "sha256:" + digest.hexdigest()
        return self._fingerprint

    def describe(self) -> dict[str, Any]:
        """Rows, shapes, class balance and feature statistics, JSON-safe."""
        x = self.features.float()
        out: dict[str, Any] = {
            "name": self.name,
            "rows": len(self),
            "input_shape": list(self.input_shape),
            "dtype": str(self.features.dtype).replace("torch.", ""),
            "task": self.task,
            "num_classes": self.num_classes,
            "missing": int(torch.isnan(x).sum()),
        }
        any_missing = out["missing"] > 0  # else no column needs its NaNs looked for again
        if self.classes is not None and self.targets is not None:
            counts = torch.bincount(self.targets.flatten(), minlength=len(self.classes)).tolist()
            out["class_counts"] = dict(zip(self.classes, counts, strict=True))
        if x.dim() == 2 and x.shape[1] <= 64:
            names = self.feature_names or [f"x{i}" for i in range(x.shape[1])]
            columns = {}
            for i, col in enumerate(names):
                values = x[:, i]
                columns[col] = summarize(values, any_missing=any_missing)
            out["features"] = columns
        else:
            out["features"] = {"all": summarize(x.flatten(), any_missing=any_missing)}
        out["fingerprint"] = self.fingerprint()
        return out

    def save(self, path: str | Path) -> Path:
        """Write features, targets and metadata to an ``.npz`` file, atomically."""
        meta = {
            "name": self.name,
            "task": self.task,
            "classes": self.classes,
            "feature_names": self.feature_names,
            "preprocessing": self.preprocessing,
        }
        arrays = {"features": self.features.numpy(), "meta": np.array(json.dumps(meta))}
        if self.targets is not None:
            arrays["targets"] = self.targets.numpy()

        def write(tmp: Path) -> None:
            buffer = io.BytesIO()
            np.savez(buffer, **arrays)  # type: ignore[arg-type]
            tmp.write_bytes(buffer.getvalue())

        return atomic_write(path, write)
