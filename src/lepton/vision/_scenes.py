"""Detection data: :class:`Scenes` (images with boxes and labels) and
:func:`digit_scenes`, scenes made reproducibly from real MNIST digits.

A scene is a black canvas with several digits of one MNIST split, each cut to its ink,
scaled (aspect kept) and pasted where it overlaps the others only partly (IoU at most
``max_overlap``); where digits overlap, the brighter pixel wins, so every digit's ink
stays on the canvas. A digit's box is the tight box of its ink (pixels brighter than
``INK``) in pixel-edge coordinates ``x1, y1, x2, y2`` (a one-pixel digit at column 3 has
``x1 = 3, x2 = 4``). The same ``split``, ``n``, ``seed`` and options always give the same
scenes; test scenes use only test-split digits (``Scenes.sources`` names them).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from lepton.errors import VisionError

__all__ = ["INK", "Scenes", "digit_scenes"]

#: The brightness (of 1) above which a pixel counts as a digit's ink.
INK = 0.2


@dataclass
class Scenes:
    """Images with their objects: what a detector trains on and is evaluated against.

    Attributes:
        images: ``(N, C, H, W)`` float32 in [0, 1].
        boxes: One ``(k_i, 4)`` float32 tensor per image, ``x1, y1, x2, y2`` in pixels.
        labels: One ``(k_i,)`` int64 tensor per image, indices into ``classes``.
        classes: Class names.
        sources: For generated scenes, the index of each object's source image in its
            dataset (one ``(k_i,)`` tensor per image); empty otherwise.
        name: A short name for messages and reports.
    """

    images: torch.Tensor
    boxes: list[torch.Tensor]
    labels: list[torch.Tensor]
    classes: list[str]
    sources: list[torch.Tensor] = field(default_factory=list)
    name: str = "scenes"

    def __post_init__(self) -> None:
        if self.images.dim() != 4:
            raise VisionError(
                f"Scenes.images must be (N, C, H, W), got shape {tuple(self.images.shape)}"
            )
        n = len(self.images)
        if len(self.boxes) != n or len(self.labels) != n:
            raise VisionError(
                f"Scenes needs one boxes and one labels tensor per image: {n} images, "
                f"{len(self.boxes)} boxes, {len(self.labels)} labels"
            )
        for i, (b, lab) in enumerate(zip(self.boxes, self.labels, strict=True)):
            check_boxes(b, f"image {i}")
            if lab.shape != (len(b),):
                raise VisionError(f"image {i} has {len(b)} boxes but labels {tuple(lab.shape)}")
            if len(lab) and (int(lab.min()) < 0 or int(lab.max()) >= len(self.classes)):
                raise VisionError(
                    f"image {i} has a label outside 0..{len(self.classes) - 1} (classes: "
                    f"{self.classes})"
                )

    def __len__(self) -> int:
        return len(self.images)

    def __repr__(self) -> str:
        objects = sum(len(b) for b in self.boxes)
        return (
            f"Scenes({self.name!r}, images={len(self)}, size={tuple(self.images.shape[1:])}, "
            f"objects={objects}, classes={len(self.classes)})"
        )

    def subset(self, indices: Sequence[int]) -> Scenes:
        """The scenes at ``indices``, in that order."""
        idx = list(indices)
        return Scenes(
            images=self.images[idx],
            boxes=[self.boxes[i] for i in idx],
            labels=[self.labels[i] for i in idx],
            classes=list(self.classes),
            sources=[self.sources[i] for i in idx] if self.sources else [],
            name=self.name,
        )


def check_boxes(boxes: torch.Tensor, where: str) -> None:
    """Refuse boxes that are not ``(k, 4)`` with ``x1 < x2`` and ``y1 < y2``."""
    if boxes.dim() != 2 or boxes.shape[1] != 4:
        raise VisionError(f"{where}: boxes must be (k, 4) x1, y1, x2, y2, got {tuple(boxes.shape)}")
    if len(boxes) and not bool(((boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])).all()):
        raise VisionError(f"{where}: every box needs x1 < x2 and y1 < y2 (xyxy pixels)")


def ink_box(patch: torch.Tensor) -> tuple[int, int, int, int] | None:
    """The tight box ``(x1, y1, x2, y2)`` of the pixels brighter than :data:`INK` in a 2-D
    ``patch``, or ``None`` when it has none."""
    rows = (patch > INK).any(dim=1).nonzero()
    cols = (patch > INK).any(dim=0).nonzero()
    if len(rows) == 0:
        return None
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def _iou_one(box: tuple[float, float, float, float], others: list[list[float]]) -> float:
    """The largest IoU of ``box`` with any of ``others`` (0 when there are none)."""
    best = 0.0
    ax1, ay1, ax2, ay2 = box
    for bx1, by1, bx2, by2 in others:
        iw, ih = min(ax2, bx2) - max(ax1, bx1), min(ay2, by2) - max(ay1, by1)
        if iw > 0 and ih > 0:
            inter = iw * ih
            union = (ax2 - ax1) * (ay2 - ay1) + (bx2 - bx1) * (by2 - by1) - inter
            best = max(best, inter / union)
    return best


def digit_scenes(
    split: str = "train",
    n: int = 1000,
    *,
    seed: int = 0,
    size: int = 64,
    digits: tuple[int, int] = (2, 5),
    digit_size: tuple[int, int] = (14, 34),
    max_overlap: float = 0.3,
    dataset: str = "mnist",
) -> Scenes:
    """Make ``n`` detection scenes from real digits of one split, reproducibly.

    Args:
        split: ``"train"`` or ``"test"``: the split the digits come from (held-out scenes
            for evaluation: ``split="test"``).
        n: Number of scenes.
        seed: The same seed (and options) always gives the same scenes.
        size: Canvas side in pixels (a multiple of 4).
        digits: Least and most digits per scene (fewer when no place is free).
        digit_size: Least and most height of a digit's ink in pixels (MNIST's is about
            20); the width follows the digit's own aspect.
        max_overlap: Largest IoU a new digit's box may have with one already placed.
        dataset: ``"mnist"`` or ``"fashion-mnist"`` (any 28x28 one-channel catalog set).

    Returns:
        :class:`Scenes` with ``(n, 1, size, size)`` images, boxes, labels and ``sources``
        (each object's index in the split).

    Example:
        >>> scenes = lp.vision.digit_scenes("test", n=1000, seed=0)  # doctest: +SKIP
        >>> scenes.boxes[0], scenes.labels[0]  # doctest: +SKIP
    """
    from lepton.data import load

    if split not in ("train", "test"):
        raise VisionError(f"split must be 'train' or 'test', got {split!r}")
    if n < 1:
        raise VisionError(f"n must be >= 1 scenes, got {n}")
    if size < 16 or size % 4:
        raise VisionError(f"size must be a multiple of 4 and >= 16 pixels, got {size}")
    lo, hi = digit_size
    if not 4 <= lo <= hi <= size:
        raise VisionError(
            f"digit_size must be (least, most) ink heights with 4 <= least <= most <= size "
            f"({size}), got {digit_size}"
        )
    if not 1 <= digits[0] <= digits[1]:
        raise VisionError(f"digits must be (least, most) with 1 <= least <= most, got {digits}")
    if not 0.0 <= max_overlap < 1.0:
        raise VisionError(f"max_overlap must be in [0, 1), got {max_overlap}")
    source = load(dataset, split=split)
    assert source.targets is not None
    pictures = source.features.reshape(len(source), -1, *source.features.shape[-2:])[:, 0]
    g = np.random.default_rng(seed)
    images = torch.zeros(n, 1, size, size)
    all_boxes: list[torch.Tensor] = []
    all_labels: list[torch.Tensor] = []
    all_sources: list[torch.Tensor] = []
    for s in range(n):
        canvas = images[s, 0]
        want = int(g.integers(digits[0], digits[1] + 1))
        boxes: list[list[float]] = []
        labels: list[int] = []
        sources: list[int] = []
        for _ in range(want):
            idx = int(g.integers(len(source)))
            height = int(g.integers(lo, hi + 1))
            patch = _scaled_digit(pictures[idx], height)
            if patch is None:
                continue
            placed = _place(patch, canvas, boxes, size, max_overlap, g)
            if placed is None:
                continue
            boxes.append(list(placed))
            labels.append(int(source.targets[idx]))
            sources.append(idx)
        all_boxes.append(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
        all_labels.append(torch.tensor(labels, dtype=torch.int64))
        all_sources.append(torch.tensor(sources, dtype=torch.int64))
    return Scenes(
        images=images,
        boxes=all_boxes,
        labels=all_labels,
        classes=list(source.classes or [str(i) for i in range(10)]),
        sources=all_sources,
        name=f"{dataset}-scenes-{split}",
    )


def _scaled_digit(picture: torch.Tensor, height: int) -> torch.Tensor | None:
    """The digit cut to its ink box and resized to ``height`` rows (aspect kept), cut
    again to the ink of the resized patch so its ink box is the whole patch."""
    box = ink_box(picture)
    if box is None:
        return None
    x1, y1, x2, y2 = box
    crop = picture[y1:y2, x1:x2]
    width = max(1, round(crop.shape[1] * height / crop.shape[0]))
    patch = F.interpolate(
        crop[None, None], size=(height, width), mode="bilinear", antialias=True,
        align_corners=False,
    )[0, 0].clamp(0, 1)  # fmt: skip
    inner = ink_box(patch)
    if inner is None:
        return None
    x1, y1, x2, y2 = inner
    return patch[y1:y2, x1:x2]


def _place(
    patch: torch.Tensor,
    canvas: torch.Tensor,
    boxes: list[list[float]],
    size: int,
    max_overlap: float,
    g: np.random.Generator,
    tries: int = 30,
) -> tuple[float, float, float, float] | None:
    """Paste ``patch`` where its box overlaps the placed ones by IoU <= ``max_overlap``;
    its box (the patch's own ink box, moved) or ``None`` when no try fits."""
    h, w = patch.shape
    if h > size or w > size:
        return None
    for _ in range(tries):
        x = int(g.integers(size - w + 1))
        y = int(g.integers(size - h + 1))
        box = (float(x), float(y), float(x + w), float(y + h))
        if _iou_one(box, boxes) <= max_overlap:
            region = canvas[y : y + h, x : x + w]
            torch.maximum(region, patch, out=region)
            return box
    return None
