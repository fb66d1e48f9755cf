"""Cleaning for tabular data, with a report of every change and a replayable record."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import torch

from lepton.data._dataset import Dataset
from lepton.data._stats import Stats
from lepton.errors import DataFormatError

__all__ = ["CleanReport", "apply_preprocessing", "clean", "replay_preprocessing"]

Impute = Literal["median", "mean", "most_frequent"]


@dataclass(frozen=True)
class CleanReport:
    """What :func:`clean` changed."""

    rows_in: int
    rows_out: int
    duplicates_dropped: int = 0
    missing_targets_dropped: int = 0
    imputed: dict[str, int] = field(default_factory=dict)
    clipped: dict[str, int] = field(default_factory=dict)
    invalid_labels: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form."""
        return asdict(self)

    def __str__(self) -> str:
        lines = [
            f"rows in {self.rows_in}, rows out {self.rows_out}",
            f"  duplicates dropped       {self.duplicates_dropped}",
            f"  missing targets dropped  {self.missing_targets_dropped}",
            f"  values imputed           {sum(self.imputed.values())}"
            + (f"  ({_top(self.imputed)})" if self.imputed else ""),
            f"  values clipped           {sum(self.clipped.values())}"
            + (f"  ({_top(self.clipped)})" if self.clipped else ""),
        ]
        lines += [f"  label problem: {msg}" for msg in self.invalid_labels]
        return "\n".join(lines)


def _top(counts: dict[str, int], n: int = 4) -> str:
    ranked = sorted(counts.items(), key=lambda kv: -kv[1])
    text = ", ".join(f"{k}: {v}" for k, v in ranked[:n])
    return text + (", ..." if len(ranked) > n else "")


def _names(ds: Dataset) -> list[str]:
    return ds.feature_names or [f"x{i}" for i in range(ds.features.shape[1])]


def _label_problems(ds: Dataset) -> list[str]:
    if ds.task != "classification" or ds.targets is None or ds.classes is None:
        return []
    counts = torch.bincount(ds.targets, minlength=len(ds.classes)).tolist()
    problems = [
        f"class {name!r} has no samples"
        for name, c in zip(ds.classes, counts, strict=True)
        if c == 0
    ]
    problems += [
        f"class {name!r} has a single sample (a stratified split needs at least 2)"
        for name, c in zip(ds.classes, counts, strict=True)
        if c == 1
    ]
    return problems


def _dedupe(x: np.ndarray, y: np.ndarray | None) -> tuple[np.ndarray, list[str]]:
    """Indices of first occurrences (in order), and a note on conflicting labels."""
    # NaN != NaN, so two rows missing the same value would never match: compare a sentinel.
    rows = np.nan_to_num(x.astype(np.float64), nan=-1.2345e300)
    full = rows if y is None else np.concatenate([rows, y.reshape(len(y), -1)], axis=1)
    _, first = np.unique(full, axis=0, return_index=True)
    keep = np.sort(first)
    notes = []
    if y is not None:
        _, feature_first = np.unique(rows[keep], axis=0, return_index=True)
        conflicts = len(keep) - len(feature_first)
        if conflicts:
            notes.append(
                f"{conflicts} rows repeat the features of another row with a different label"
            )
    return keep, notes


def _impute_values(x: np.ndarray, strategy: Impute) -> np.ndarray:
    values = np.zeros(x.shape[1], dtype=np.float64)
    for j in range(x.shape[1]):
        col = x[:, j][~np.isnan(x[:, j])]
        if len(col) == 0:
            continue
        if strategy == "median":
            values[j] = np.median(col)
        elif strategy == "mean":
            values[j] = col.mean()
        else:
            uniques, counts = np.unique(col, return_counts=True)
            values[j] = uniques[np.argmax(counts)]
    return values


def clean(
    ds: Dataset,
    *,
    drop_duplicates: bool = True,
    impute: Impute | None = "median",
    clip_outliers: float | None = None,
    validate_labels: bool = True,
    drop_missing_targets: bool = True,
) -> tuple[Dataset, CleanReport]:
    """Clean a tabular dataset and report what changed.

    Args:
        ds: A dataset with 2-D features ``(N, F)``.
        drop_duplicates: Drop rows identical to an earlier row (features and target).
        impute: Fill missing (NaN) features with each column's median, mean or most
            frequent value; ``None`` leaves them.
        clip_outliers: Clip each feature to ``[Q1 - k*IQR, Q3 + k*IQR]`` with this ``k``
            (e.g. 1.5 or 3.0); ``None`` keeps outliers.
        validate_labels: Report empty or single-sample classes and conflicting labels.
        drop_missing_targets: Drop rows whose regression target is NaN.

    Returns:
        The cleaned dataset (its ``preprocessing`` records the impute/clip values, so
        :func:`apply_preprocessing` replays them on test data) and a :class:`CleanReport`.
    """
    if ds.features.dim() != 2:
        raise DataFormatError(
            f"clean() is for tabular data (N, features); {ds.name!r} has samples of shape "
            f"{ds.input_shape}. For images use standardize()/normalize()"
        )
    x = ds.features.double().numpy().copy()
    y = ds.targets.numpy() if ds.targets is not None else None
    keep = np.arange(len(x))
    missing_targets = 0
    if drop_missing_targets and y is not None and ds.task == "regression":
        ok = ~np.isnan(y.reshape(len(y), -1)).any(axis=1)
        missing_targets = int((~ok).sum())
        keep = keep[ok]
    notes: list[str] = []
    duplicates = 0
    if drop_duplicates:
        first, notes = _dedupe(x[keep], y[keep] if y is not None else None)
        duplicates = len(keep) - len(first)
        keep = keep[first]
    x = x[keep]
    names = _names(ds)
    steps: list[dict[str, Any]] = []
    imputed: dict[str, int] = {}
    if impute is not None:
        missing = np.isnan(x)
        values = _impute_values(x, impute)
        x = np.where(missing, values, x)
        imputed = {names[j]: int(c) for j, c in enumerate(missing.sum(axis=0)) if c}
        steps.append({"op": "impute", "strategy": impute, "values": values.tolist()})
    clipped: dict[str, int] = {}
    if clip_outliers is not None:
        q1, q3 = np.nanpercentile(x, 25, axis=0), np.nanpercentile(x, 75, axis=0)
        low, high = q1 - clip_outliers * (q3 - q1), q3 + clip_outliers * (q3 - q1)
        outside = (x < low) | (x > high)
        x = np.clip(x, low, high)
        clipped = {names[j]: int(c) for j, c in enumerate(outside.sum(axis=0)) if c}
        steps.append({"op": "clip", "k": clip_outliers, "low": low.tolist(), "high": high.tolist()})
    out = ds._derive(
        torch.from_numpy(x.astype(np.float32)),
        ds.targets.index_select(0, torch.from_numpy(keep)) if ds.targets is not None else None,
        preprocessing=[*ds.preprocessing, *steps],
    )
    report = CleanReport(
        rows_in=len(ds),
        rows_out=len(out),
        duplicates_dropped=duplicates,
        missing_targets_dropped=missing_targets,
        imputed=imputed,
        clipped=clipped,
        invalid_labels=(notes + _label_problems(out)) if validate_labels else [],
    )
    return out, report


def apply_preprocessing(ds: Dataset, steps: Sequence[Mapping[str, Any]]) -> Dataset:
    """Replay recorded steps (impute, clip, standardize, minmax) on another dataset.

    This is how test data or serving inputs get exactly the training data's treatment.
    """
    x, stats = replay_preprocessing(ds.features, steps)
    return ds._derive(
        x, ds.targets, stats=stats or ds.stats, preprocessing=[*ds.preprocessing, *steps]
    )


def replay_preprocessing(
    features: torch.Tensor, steps: Sequence[Mapping[str, Any]]
) -> tuple[torch.Tensor, Stats | None]:
    """Replay recorded steps on a features tensor (a batch: ``(N, ...)``).

    Returns:
        The float32 features after every step, and the last scaling step's statistics.
    """
    x = features.float()
    stats: Stats | None = None
    for step in steps:
        op = step.get("op")
        if op == "impute":
            values = torch.tensor(step["values"], dtype=torch.float32)
            x = torch.where(torch.isnan(x), values, x)
        elif op == "clip":
            low = torch.tensor(step["low"], dtype=torch.float32)
            high = torch.tensor(step["high"], dtype=torch.float32)
            x = torch.maximum(torch.minimum(x, high), low)
        elif op in ("standardize", "minmax"):
            stats = Stats.from_dict(dict(step))
            x = stats.apply(x)
        else:
            raise DataFormatError(
                f"unknown preprocessing step {op!r}; known: impute, clip, standardize, minmax"
            )
    return x, stats
