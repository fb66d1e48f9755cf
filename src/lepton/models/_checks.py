"""Argument and input checks shared by the zoo; every failure says what a good call is."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from lepton.errors import ShapeError, UnknownModelError

NORMS = ("batch", "group", "none")  # the zoo's normalisation choices (``norm=``)


def norm2d(kind: str, channels: int) -> nn.Module:
    """The normalisation layer ``norm=kind`` puts after a convolution: ``"batch"``
    (BatchNorm), ``"group"`` (GroupNorm with ``min(32, channels)`` groups, which is what
    Opacus puts in BatchNorm's place: per-sample gradients stay per sample, so DP-SGD can
    train it) or ``"none"``."""
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        return nn.GroupNorm(min(32, channels), channels)
    return nn.Identity()


class ArgChecker:
    """Validate constructor arguments of one model, quoting a correct call on failure.

    Args:
        owner: The class name shown in messages.
        example: A correct constructor call, e.g. ``"MLP(in_features=784, num_classes=10)"``.
    """

    def __init__(self, owner: str, example: str) -> None:
        self.owner = owner
        self.example = example

    def fail(self, problem: str) -> UnknownModelError:
        """Return (not raise) the error for ``problem``, so callers can ``raise`` it."""
        return UnknownModelError(f"{self.owner}: {problem}. A correct call: {self.example}.")

    def int_(self, name: str, value: Any, minimum: int) -> int:
        """Check ``value`` is an int (not a bool) >= ``minimum``."""
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise self.fail(f"{name} must be an int >= {minimum}, got {value!r}")
        return value

    def ints(self, name: str, value: Any, minimum: int = 1, allow_empty: bool = False) -> list[int]:
        """Check ``value`` is a (non-empty unless allowed) sequence of ints >= ``minimum``."""
        ok = isinstance(value, Sequence) and not isinstance(value, str)
        ok = ok and (allow_empty or len(value) > 0)
        ok = ok and all(
            isinstance(v, int) and not isinstance(v, bool) and v >= minimum for v in value
        )
        if not ok:
            kind = "a list" if allow_empty else "a non-empty list"
            raise self.fail(f"{name} must be {kind} of ints >= {minimum}, got {value!r}")
        return list(value)

    def kernel_sizes(self, name: str, value: Any, layers: int) -> list[tuple[int, int]]:
        """Check a convolution size argument and give one ``(height, width)`` per layer.

        Accepted, as PyTorch's ``Conv2d`` and the articles write it: an int (``3``: 3x3 in
        every layer), a ``[height, width]`` pair (``[3, 3]``, or ``[3, 5]`` for 3x5, in
        every layer), or one entry per layer, each an int or a pair (``[5, 3, 3]``,
        ``[[5, 5], [3, 3], [3, 1]]``). A flat two-int list is always a pair, as in
        PyTorch; two layers with different square kernels are ``[[3, 3], [5, 5]]``.
        """

        def one(item: Any) -> tuple[int, int] | None:
            if isinstance(item, int) and not isinstance(item, bool) and item >= 1:
                return (item, item)
            if (
                isinstance(item, Sequence) and not isinstance(item, str) and len(item) == 2
                and all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in item)
            ):  # fmt: skip
                return (item[0], item[1])
            return None

        every = one(value)
        if every is not None:
            return [every] * layers
        per_layer = (
            [one(v) for v in value]
            if isinstance(value, Sequence) and not isinstance(value, str)
            else []
        )
        if len(per_layer) == layers and all(k is not None for k in per_layer):
            return [k for k in per_layer if k is not None]
        raise self.fail(
            f"{name} must be an int >= 1 (3), a [height, width] pair ([3, 3]) or one per "
            f"layer ({layers} of them, e.g. {[3] * layers}), got {value!r}"
        )

    def fraction(self, name: str, value: Any) -> float:
        """Check ``value`` is a number in [0, 1)."""
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
            raise self.fail(f"{name} must be a float in [0, 1), got {value!r}")
        return float(value)

    def choice(self, name: str, value: Any, choices: Sequence[str]) -> str:
        """Check ``value`` is one of ``choices``."""
        if value not in choices:
            raise self.fail(f"{name} must be one of {list(choices)}, got {value!r}")
        return str(value)

    def bool_(self, name: str, value: Any) -> bool:
        """Check ``value`` is a bool."""
        if not isinstance(value, bool):
            raise self.fail(f"{name} must be True or False, got {value!r}")
        return value


def image_batch(
    x: torch.Tensor, owner: str, in_channels: int, size: tuple[int, int] | None = None
) -> torch.Tensor:
    """Return ``x`` as ``(B, C, H, W)``; ``(B, H, W)`` is accepted when ``in_channels == 1``.

    Raises:
        ShapeError: The layout, channel count or spatial size does not match.
    """
    if x.ndim == 3 and in_channels == 1:
        x = x.unsqueeze(1)  # (B, H, W) -> (B, 1, H, W)
    hw = f"{size[0]}, {size[1]}" if size else "H, W"
    expected = f"(B, {in_channels}, {hw})"
    if x.ndim != 4 or x.shape[1] != in_channels or (size and tuple(x.shape[2:]) != size):
        raise ShapeError(
            f"{owner} expects images shaped {expected}, got {tuple(x.shape)}; reshape the "
            f"batch or build the model with in_channels={x.shape[1] if x.ndim == 4 else '?'}"
            + ("" if size is None else " and a matching input_size")
            + "."
        )
    if not x.is_floating_point():
        raise ShapeError(f"{owner} expects float images, got {x.dtype}; call x.float() first.")
    return x


def token_batch(x: torch.Tensor, owner: str, vocab_size: int) -> torch.Tensor:
    """Check ``x`` is a ``(B, T)`` batch of integer token ids in ``[0, vocab_size)``.

    Raises:
        ShapeError: Wrong rank, a non-integer dtype, or an id outside the vocabulary.
    """
    if x.ndim != 2 or x.dtype.is_floating_point or x.dtype.is_complex or x.dtype == torch.bool:
        raise ShapeError(
            f"{owner} expects token ids shaped (B, T) with an integer dtype, got "
            f"{tuple(x.shape)} {x.dtype}; tokenize the text and pass a torch.long tensor."
        )
    if x.shape[1] == 0:
        raise ShapeError(f"{owner} got sequences of length 0; pad each sequence to T >= 1.")
    if x.numel() and (int(x.min()) < 0 or int(x.max()) >= vocab_size):
        raise ShapeError(
            f"{owner} got token ids in [{int(x.min())}, {int(x.max())}] but vocab_size is "
            f"{vocab_size}; ids must lie in [0, {vocab_size}). Rebuild with a larger vocab_size."
        )
    return x.long()


def lengths_from_padding(x: torch.Tensor, padding_idx: int) -> torch.Tensor:
    """Length of each right-padded row: index of its last non-padding token + 1 (min 1)."""
    positions = torch.arange(1, x.shape[1] + 1, device=x.device)  # (T,)
    return ((x != padding_idx).long() * positions).amax(dim=1).clamp(min=1)  # (B,)
