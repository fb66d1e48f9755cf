"""Augmentation for image classification, as ``lp.fit`` options.

* :class:`Augment` is a dataset transform (``train.with_transform(Augment(...))``): every
  image of a batch gets its own random crop (zero padding, then a crop back to the
  original size: a shift of up to ``padding`` pixels), optional horizontal flip (for
  clothes, never for digits: a flipped 2 is no digit) and random erasing (Zhong et al.,
  2017). It is vectorised over the batch: a torchvision ``v2`` transform on a batched
  tensor draws ONE set of parameters for the whole batch; :class:`Augment` draws one per
  image. A torchvision ``v2`` pipeline can be given as ``pipeline=`` to run per image.
* :class:`MixUp`, :class:`CutMix` and :class:`RandomMix` are ``lp.fit``'s
  ``batch_transform=``: they mix pairs of images and return ``(N, K)`` soft targets,
  which cross-entropy takes (the same contract as torchvision's ``v2.MixUp``/``v2.CutMix``,
  which can be passed instead).
* :func:`label_smoothing` is a ``loss=`` hook; :func:`tta_predict` averages the softmax over
  shifted (and optionally flipped) copies at test time.

Randomness comes from torch's global generator, which ``lp.fit(seed=...)`` seeds: the
same seed gives the same augmented batches.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from lepton.errors import VisionError

__all__ = [
    "Augment",
    "CutMix",
    "MixUp",
    "RandomMix",
    "label_smoothing",
    "tta_accuracy",
    "tta_predict",
]


def _as_images(x: torch.Tensor, what: str) -> torch.Tensor:
    if x.dim() == 3:
        return x[:, None]
    if x.dim() != 4:
        raise VisionError(f"{what} takes image batches (N, C, H, W), got {tuple(x.shape)}")
    return x


class Augment:
    """Per-image random crop (with padding), horizontal flip and erasing of a batch.

    Args:
        padding: Pad each side by this many pixels, then crop back at a random place
            (0: no crop).
        hflip: Flip half the images left-right (clothes, natural images; not digits).
        erasing: Probability that an image gets one random rectangle erased to 0
            (area 2-33% of the image, aspect ratio 0.3-3.3).
        pipeline: Any callable on one ``(C, H, W)`` image (e.g. a torchvision
            ``v2.Compose``), applied to each image after the built-in steps.

    Example:
        >>> train = lp.data.load("fashion-mnist", split="train")  # doctest: +SKIP
        >>> augment = Augment(padding=2, hflip=True, erasing=0.5)
        >>> train = train.with_transform(augment)  # doctest: +SKIP
    """

    def __init__(
        self,
        padding: int = 2,
        *,
        hflip: bool = False,
        erasing: float = 0.0,
        pipeline: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        if padding < 0:
            raise VisionError(f"padding must be >= 0 pixels, got {padding}")
        if not 0.0 <= erasing <= 1.0:
            raise VisionError(f"erasing is a probability in [0, 1], got {erasing}")
        self.padding, self.hflip, self.erasing, self.pipeline = padding, hflip, erasing, pipeline

    def __repr__(self) -> str:
        return f"Augment(padding={self.padding}, hflip={self.hflip}, erasing={self.erasing})"

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = _as_images(x, "Augment").float()
        if self.padding:
            x = self._crop(x)
        if self.hflip:
            flip = torch.rand(len(x), device=x.device) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        if self.erasing:
            x = self._erase(x)
        if self.pipeline is not None:
            x = torch.stack([self.pipeline(img) for img in x])
        return x

    def _crop(self, x: torch.Tensor) -> torch.Tensor:
        n, _c, h, w = x.shape
        p = self.padding
        padded = F.pad(x, (p, p, p, p))  # (N, C, H + 2p, W + 2p)
        dy = torch.randint(0, 2 * p + 1, (n,), device=x.device)
        dx = torch.randint(0, 2 * p + 1, (n,), device=x.device)
        rows = (dy[:, None] + torch.arange(h, device=x.device))[:, :, None]  # (N, H, 1)
        cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, :]  # (N, 1, W)
        batch = torch.arange(n, device=x.device)[:, None, None]  # (N, 1, 1)
        return padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)  # (N, C, H, W)

    def _erase(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        dev = x.device
        area = torch.empty(n, device=dev).uniform_(0.02, 0.33) * h * w
        ratio = torch.exp(torch.empty(n, device=dev).uniform_(math.log(0.3), math.log(3.3)))
        eh = (area * ratio).sqrt().round().clamp(1, h)
        ew = (area / ratio).sqrt().round().clamp(1, w)
        y0 = (torch.rand(n, device=dev) * (h - eh + 1)).floor()
        x0 = (torch.rand(n, device=dev) * (w - ew + 1)).floor()
        ys = torch.arange(h, device=dev)[None, :, None]  # (1, H, 1)
        xs = torch.arange(w, device=dev)[None, None, :]  # (1, 1, W)
        inside = (
            (ys >= y0[:, None, None]) & (ys < (y0 + eh)[:, None, None])
            & (xs >= x0[:, None, None]) & (xs < (x0 + ew)[:, None, None])
        )  # fmt: skip  # (N, H, W)
        erase = inside & (torch.rand(n, device=dev) < self.erasing)[:, None, None]
        return x.masked_fill(erase[:, None], 0.0)


def _soft(y: torch.Tensor, num_classes: int) -> torch.Tensor:
    return y.float() if y.dim() == 2 else F.one_hot(y.long(), num_classes).float()


class MixUp:
    """``lp.fit(batch_transform=MixUp(num_classes))``: each image blended with another of
    the batch, ``lam * x + (1 - lam) * x[perm]``, targets likewise (Zhang et al., 2018);
    ``lam ~ Beta(alpha, alpha)`` per batch."""

    def __init__(self, num_classes: int, alpha: float = 0.2) -> None:
        if num_classes < 2 or alpha <= 0:
            raise VisionError(
                f"MixUp needs num_classes >= 2 and alpha > 0, got {num_classes}, {alpha}"
            )
        self.num_classes, self.alpha = num_classes, alpha

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        soft = _soft(y, self.num_classes)
        lam = float(torch.distributions.Beta(self.alpha, self.alpha).sample())
        perm = torch.randperm(len(x), device=x.device)
        return lam * x + (1 - lam) * x[perm], lam * soft + (1 - lam) * soft[perm]


class CutMix:
    """``lp.fit(batch_transform=CutMix(num_classes))``: a random box of each image replaced
    by the same box of another image of the batch, targets mixed by the box's area share
    (Yun et al., 2019); the box's area share ``~ Beta(alpha, alpha)`` per batch."""

    def __init__(self, num_classes: int, alpha: float = 1.0) -> None:
        if num_classes < 2 or alpha <= 0:
            raise VisionError(
                f"CutMix needs num_classes >= 2 and alpha > 0, got {num_classes}, {alpha}"
            )
        self.num_classes, self.alpha = num_classes, alpha

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = _as_images(x, "CutMix")
        soft = _soft(y, self.num_classes)
        h, w = x.shape[-2:]
        lam = float(torch.distributions.Beta(self.alpha, self.alpha).sample())
        ch, cw = int(h * math.sqrt(1 - lam)), int(w * math.sqrt(1 - lam))
        cy, cx = int(torch.randint(h, (1,))), int(torch.randint(w, (1,)))
        y1, y2 = max(cy - ch // 2, 0), min(cy + ch // 2, h)
        x1, x2 = max(cx - cw // 2, 0), min(cx + cw // 2, w)
        perm = torch.randperm(len(x), device=x.device)
        mixed = x.clone()
        mixed[..., y1:y2, x1:x2] = x[perm][..., y1:y2, x1:x2]
        kept = 1 - (y2 - y1) * (x2 - x1) / (h * w)  # the share of the image left as it was
        return mixed, kept * soft + (1 - kept) * soft[perm]


class RandomMix:
    """MixUp or CutMix, one of the two (even odds) per batch, applied with probability
    ``p`` (else the batch passes unchanged, with one-hot targets)."""

    def __init__(
        self,
        num_classes: int,
        *,
        mixup_alpha: float = 0.2,
        cutmix_alpha: float = 1.0,
        p: float = 1.0,
    ) -> None:
        if not 0.0 <= p <= 1.0:
            raise VisionError(f"p is a probability in [0, 1], got {p}")
        self.mixup, self.cutmix = MixUp(num_classes, mixup_alpha), CutMix(num_classes, cutmix_alpha)
        self.num_classes, self.p = num_classes, p

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if float(torch.rand(())) >= self.p:
            return x, _soft(y, self.num_classes)
        return (self.mixup if float(torch.rand(())) < 0.5 else self.cutmix)(x, y)


def label_smoothing(
    epsilon: float = 0.1,
) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
    """``lp.fit(loss=label_smoothing(0.1))``: cross-entropy against targets smoothed
    towards the uniform distribution by ``epsilon`` (hard labels or soft mixes)."""
    if not 0.0 <= epsilon < 1.0:
        raise VisionError(f"label smoothing epsilon must be in [0, 1), got {epsilon}")

    def loss(out: torch.Tensor, y: torch.Tensor, _x: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(out, y, label_smoothing=epsilon)

    return loss


@torch.no_grad()
def tta_predict(
    model: nn.Module,
    x: torch.Tensor,
    *,
    shift: int = 1,
    hflip: bool = False,
    batch_size: int = 512,
) -> torch.Tensor:
    """Class probabilities ``(N, K)`` averaged over test-time augmentations: the image,
    copies shifted by ``shift`` pixels up, down, left and right (zero fill), and, with
    ``hflip``, the mirrored image (not for digits)."""
    x = _as_images(x, "tta_predict").float()
    model.eval()
    dev = next(model.parameters()).device
    moves = [(0, 0)] + ([(shift, 0), (-shift, 0), (0, shift), (0, -shift)] if shift else [])
    views: list[Callable[[torch.Tensor], torch.Tensor]] = [
        functools.partial(_shift, dy=dy, dx=dx) for dy, dx in moves
    ]
    if hflip:
        views.append(lambda t: t.flip(-1))
    parts = []
    for start in range(0, len(x), batch_size):
        xb = x[start : start + batch_size].to(dev)
        probs = torch.stack([model(view(xb)).softmax(-1) for view in views]).mean(0)
        parts.append(probs.cpu())
    return torch.cat(parts)


def _shift(t: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """Move the image content by ``(dy, dx)`` pixels, filling with zeros."""
    if dy == dx == 0:
        return t
    p = max(abs(dy), abs(dx))
    padded = F.pad(t, (p, p, p, p))
    h, w = t.shape[-2:]
    return padded[..., p - dy : p - dy + h, p - dx : p - dx + w]


def tta_accuracy(model: nn.Module, data: object, *, shift: int = 1, hflip: bool = False) -> float:
    """Accuracy of :func:`tta_predict` on a labelled :class:`~lepton.data.Dataset`."""
    from lepton.data import Dataset

    if not isinstance(data, Dataset) or data.targets is None:
        raise VisionError("tta_accuracy takes a labelled lp.data.Dataset")
    probs = tta_predict(model, data.features, shift=shift, hflip=hflip)
    return float((probs.argmax(1) == data.targets).float().mean())
