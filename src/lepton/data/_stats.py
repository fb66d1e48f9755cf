"""Normalisation statistics (computed on a training split, re-applied anywhere), and the
summary statistics :meth:`~lepton.data.Dataset.describe` reports."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch

from lepton.errors import DataFormatError

__all__ = ["Axis", "Stats", "compute_stats", "summarize"]

Axis = Literal["feature", "channel", "global"]
Kind = Literal["standardize", "minmax"]


@dataclass(frozen=True)
class Stats:
    """``x -> (x - shift) / scale``, with the statistics of one dataset.

    Attributes:
        kind: ``"standardize"`` (shift = mean, scale = std) or ``"minmax"`` (shift = min,
            scale = max - min).
        axis: ``"feature"`` (one value per feature), ``"channel"`` (per image channel) or
            ``"global"`` (one value).
        shift: Broadcastable against one sample, e.g. ``(C, 1, 1)`` for ``"channel"``.
        scale: Same shape as ``shift``; never zero.
    """

    kind: Kind
    axis: Axis
    shift: torch.Tensor
    scale: torch.Tensor

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise a batch ``(N, ...)`` with these statistics."""
        if x.shape[1:] and self.shift.dim() > len(x.shape[1:]):
            raise DataFormatError(
                f"statistics for samples of shape {tuple(self.shift.shape)} cannot be applied to "
                f"samples of shape {tuple(x.shape[1:])}; compute them on data of the same layout"
            )
        return (x.float() - self.shift) / self.scale

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form (what a model manifest stores)."""
        return {
            "op": self.kind,
            "axis": self.axis,
            "shape": list(self.shift.shape),
            "shift": self.shift.flatten().tolist(),
            "scale": self.scale.flatten().tolist(),
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Stats:
        """Inverse of :meth:`to_dict`."""
        shape = tuple(raw["shape"])
        shift = torch.tensor(raw["shift"], dtype=torch.float32).reshape(shape)
        scale = torch.tensor(raw["scale"], dtype=torch.float32).reshape(shape)
        return cls(kind=raw["op"], axis=raw["axis"], shift=shift, scale=scale)


def _reduce_dims(x: torch.Tensor, axis: Axis) -> tuple[int, ...]:
    if axis == "feature":
        return (0,)
    if axis == "global":
        return tuple(range(x.dim()))
    if x.dim() < 3:
        raise DataFormatError(
            f"axis='channel' needs image-like samples (N, C, ...), got shape {tuple(x.shape)}; "
            f"use axis='feature' for tabular data"
        )
    return (0, *range(2, x.dim()))


def compute_stats(x: torch.Tensor, kind: Kind, axis: Axis) -> Stats:
    """Statistics of ``x`` (NaN values ignored), shaped to broadcast over one sample."""
    x = x.float()
    dims = _reduce_dims(x, axis)
    if kind == "standardize":
        mean = torch.nanmean(x, dim=dims, keepdim=True)
        var = torch.nanmean((x - mean) ** 2, dim=dims, keepdim=True)
        shift, scale = mean, var.sqrt()
    else:
        finite = torch.where(torch.isnan(x), torch.inf, x)
        low = finite.amin(dim=dims, keepdim=True)
        high = torch.where(torch.isnan(x), -torch.inf, x).amax(dim=dims, keepdim=True)
        shift, scale = low, high - low
    scale = torch.where(torch.isfinite(scale) & (scale > 0), scale, torch.ones_like(scale))
    shift = torch.where(torch.isfinite(shift), shift, torch.zeros_like(shift))
    return Stats(kind=kind, axis=axis, shift=shift.squeeze(0), scale=scale.squeeze(0))


def summarize(values: torch.Tensor, *, any_missing: bool = True) -> dict[str, float]:
    """Mean, standard deviation, min and max of ``values`` without its NaNs (all NaN
    when nothing is left). ``any_missing=False`` says the caller knows there is no NaN:
    the values are then read as they are, not copied."""
    finite = values[~torch.isnan(values)] if any_missing else values
    if len(finite) == 0:
        return {"mean": float("nan"), "std": float("nan"), "min": float("nan"), "max": float("nan")}
    return {
        "mean": round(float(finite.mean()), 6),
        "std": round(float(finite.std(unbiased=False)), 6),
        "min": round(float(finite.min()), 6),
        "max": round(float(finite.max()), 6),
    }
