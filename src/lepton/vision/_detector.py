"""A small anchor-free detector in the style of CenterNet (Zhou et al., "Objects as
Points", 2019): the whole model, its training targets, its loss and its decoding.

An object is the peak of a per-class heatmap at its box centre, plus the box's size and
the sub-cell offset of the centre, all predicted on a grid ``stride`` times coarser than
the image. Symbols used in the shape comments:

    B  batch            C  classes           H, W  image size
    h, w  grid size (H / stride, W / stride)  K  candidate peaks per image

The network returns ONE tensor ``(B, C + 4, h, w)``: channels ``[0, C)`` are heatmap
logits, ``[C, C + 2)`` the box width and height in grid cells, ``[C + 2, C + 4)`` the
centre's offset within its cell. :func:`encode` builds the training target of the same
shape (Gaussian bumps with a peak of exactly 1 at each centre; size and offset written at
the centre cell only), so ``lp.fit`` trains it as a regression with :func:`centernet_loss`
as its ``loss=`` hook: no detection-specific loop.

Decoding keeps the heatmap's local maxima (a 3x3 max-pool, CenterNet's cheap NMS), turns
the top ``K`` into boxes, then runs class-aware non-maximum suppression
(``torchvision.ops.batched_nms``) to drop the duplicates of overlapping digits.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from lepton.models import register_model
from lepton.vision._ops import batched_nms

__all__ = ["CenterNet", "Detections", "centernet_loss", "decode", "encode", "gaussian_radius"]


# -- the network ----------------------------------------------------------------------


class _Block(nn.Module):
    """A residual pair of 3x3 convolutions; ``dilation`` widens the receptive field."""

    def __init__(self, channels: int, dilation: int = 1) -> None:
        super().__init__()
        pad = dilation
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=pad, dilation=dilation, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=pad, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))  # (B, ch, h, w)
        return torch.relu(x + self.bn2(self.conv2(out)))  # (B, ch, h, w)


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


@register_model("vision-centernet")
class CenterNet(nn.Module):
    """Backbone at stride 4 and three heads (heatmap, size, offset).

    Registered as ``"vision-centernet"``: ``lp.register(detector, name)`` stores the
    weights (safetensors) and these arguments in the manifest, which is all a served
    ``/detect`` needs to rebuild it (classes, the training image size that inputs are
    resized to, and the decoding thresholds).

    Args:
        num_classes: Object classes ``C``.
        in_channels: Image channels.
        width: Channels at stride 4 (half of it at stride 2).
        blocks: Residual blocks at stride 4 (dilations 1, 2, 4, 1, 2, 4, ...: the
            receptive field must cover the largest object).
        classes: Class names (default ``"0"``, ``"1"``, ...).
        input_size: ``[height, width]`` of the training images (served images are resized
            to it); ``None`` when unknown.
        score_threshold, iou_threshold, max_detections: The decoding defaults of
            :meth:`lepton.vision.Detector.predict` and of a served ``/detect``.

    Example:
        >>> net = CenterNet(num_classes=10, width=16, blocks=2)
        >>> net(torch.zeros(2, 1, 64, 64)).shape
        torch.Size([2, 14, 16, 16])
    """

    stride = 4

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 1,
        width: int = 64,
        blocks: int = 4,
        classes: list[str] | None = None,
        input_size: list[int] | None = None,
        score_threshold: float = 0.3,
        iou_threshold: float = 0.5,
        max_detections: int = 100,
    ) -> None:
        super().__init__()
        self.num_classes, self.in_channels = num_classes, in_channels
        self.width, self.blocks = width, blocks
        self.classes = (
            list(classes) if classes is not None else [str(i) for i in range(num_classes)]
        )
        self.input_size = list(input_size) if input_size is not None else None
        self.score_threshold, self.iou_threshold = score_threshold, iou_threshold
        self.max_detections = max_detections
        half = max(8, width // 2)
        self.backbone = nn.Sequential(
            _conv(in_channels, half, stride=2),  # (B, width/2, H/2, W/2)
            _conv(half, width, stride=2),  # (B, width, h, w)
            *[_Block(width, dilation=(1, 2, 4)[i % 3]) for i in range(blocks)],
        )

        def head(out: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(width, width, 3, padding=1),
                nn.ReLU(inplace=True),
                nn.Conv2d(width, out, 1),
            )

        self.heatmap = head(num_classes)
        self.size = head(2)
        self.offset = head(2)
        # A prior of 0.1 on every cell (CenterNet's -2.19 bias) keeps the focal loss sane
        # in the first steps, when nearly every cell is background.
        last = self.heatmap[-1]
        assert isinstance(last, nn.Conv2d)
        assert last.bias is not None
        nn.init.constant_(last.bias, -math.log((1 - 0.1) / 0.1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``(B, C_in, H, W)`` (H, W multiples of 4) -> ``(B, C + 4, h, w)``."""
        f = self.backbone(x)  # (B, width, h, w)
        return torch.cat([self.heatmap(f), self.size(f), self.offset(f)], dim=1)  # (B, C+4, h, w)


# -- training targets ---------------------------------------------------------------------


def gaussian_radius(height: float, width: float, min_overlap: float = 0.7) -> float:
    """The radius (in cells) within which a shifted box still overlaps the true one by
    IoU ``min_overlap`` (CenterNet's three cases: both corners inside, one out, both
    out); the heatmap's Gaussian has sigma ``(2 * radius + 1) / 6``."""
    a1, b1 = 1.0, height + width
    c1 = width * height * (1 - min_overlap) / (1 + min_overlap)
    r1 = (b1 + math.sqrt(b1**2 - 4 * a1 * c1)) / 2
    a2, b2 = 4.0, 2 * (height + width)
    c2 = (1 - min_overlap) * width * height
    r2 = (b2 + math.sqrt(b2**2 - 4 * a2 * c2)) / 2
    a3, b3 = 4 * min_overlap, -2 * min_overlap * (height + width)
    c3 = (min_overlap - 1) * width * height
    r3 = (b3 + math.sqrt(b3**2 - 4 * a3 * c3)) / 2
    return min(r1, r2, r3)


def encode(
    boxes: torch.Tensor, labels: torch.Tensor, num_classes: int, grid: tuple[int, int], stride: int
) -> torch.Tensor:
    """The training target ``(C + 4, h, w)`` of one image's boxes ``(k, 4)`` (xyxy pixels)
    and labels ``(k,)``."""
    h, w = grid
    target = torch.zeros(num_classes + 4, h, w)
    ys = torch.arange(h, dtype=torch.float32)[:, None]  # (h, 1)
    xs = torch.arange(w, dtype=torch.float32)[None, :]  # (1, w)
    for box, label in zip(boxes.tolist(), labels.tolist(), strict=True):
        x1, y1, x2, y2 = (v / stride for v in box)  # in cells
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        ix, iy = min(int(cx), w - 1), min(int(cy), h - 1)  # the centre's cell
        radius = max(0.0, math.floor(gaussian_radius(y2 - y1, x2 - x1)))
        sigma = (2 * radius + 1) / 6
        bump = torch.exp(-((xs - ix) ** 2 + (ys - iy) ** 2) / (2 * sigma**2))  # (h, w), 1 at centre
        torch.maximum(target[label], bump, out=target[label])
        target[num_classes:, iy, ix] = torch.tensor([x2 - x1, y2 - y1, cx - ix, cy - iy])
    return target


# -- the loss -----------------------------------------------------------------------------


def centernet_loss(
    out: torch.Tensor,
    target: torch.Tensor,
    _inputs: torch.Tensor | None = None,
    *,
    size_weight: float = 0.4,
    offset_weight: float = 1.0,
) -> torch.Tensor:
    """Focal loss on the heatmap (alpha 2, beta 4) + L1 on size and offset at the centres,
    each normalised by the number of objects: ``lp.fit``'s ``loss=`` hook.

    ``out`` and ``target`` are ``(B, C + 4, h, w)``; ``size_weight`` 0.4 on sizes in cells
    is CenterNet's 0.1 on sizes in pixels at stride 4.
    """
    c = out.shape[1] - 4
    logits, gt = out[:, :c], target[:, :c]  # (B, C, h, w)
    pred = torch.sigmoid(logits).clamp(1e-4, 1 - 1e-4)
    positive = gt.eq(1).float()  # (B, C, h, w): the centres
    n = positive.sum().clamp(min=1)
    pos_loss = -(torch.log(pred) * (1 - pred) ** 2 * positive).sum()
    neg_loss = -(torch.log(1 - pred) * pred**2 * (1 - gt) ** 4 * (1 - positive)).sum()
    centres = positive.amax(dim=1, keepdim=True)  # (B, 1, h, w)
    size_l1 = (F.l1_loss(out[:, c : c + 2], target[:, c : c + 2], reduction="none") * centres).sum()
    off_l1 = (F.l1_loss(out[:, c + 2 :], target[:, c + 2 :], reduction="none") * centres).sum()
    return (pos_loss + neg_loss + size_weight * size_l1 + offset_weight * off_l1) / n


# -- decoding -----------------------------------------------------------------------------

#: One image's detections: ``boxes`` ``(m, 4)`` xyxy pixels, ``scores`` ``(m,)``,
#: ``labels`` ``(m,)``, best first.
Detections = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


@torch.no_grad()
def decode(
    out: torch.Tensor,
    stride: int = 4,
    *,
    top_k: int = 100,
    score_threshold: float = 0.05,
    iou_threshold: float = 0.5,
    max_detections: int = 100,
    image_size: tuple[int, int] | None = None,
) -> list[Detections]:
    """Turn the network's output ``(B, C + 4, h, w)`` into boxes, scores and labels per
    image: heatmap peaks (3x3 local maxima), the top ``top_k``, those scoring at least
    ``score_threshold``, then class-aware NMS at ``iou_threshold``."""
    b, c4, h, w = out.shape
    c = c4 - 4
    heat = torch.sigmoid(out[:, :c])  # (B, C, h, w)
    peaks = heat * (F.max_pool2d(heat, 3, stride=1, padding=1) == heat)  # (B, C, h, w)
    k = min(top_k, c * h * w)
    scores, flat = peaks.reshape(b, -1).topk(k)  # (B, K): index = class * h * w + y * w + x
    labels = flat // (h * w)
    cell = flat % (h * w)
    cy, cx = (cell // w).float(), (cell % w).float()  # (B, K)
    size = out[:, c : c + 2].reshape(b, 2, -1)  # (B, 2, h*w)
    offset = out[:, c + 2 :].reshape(b, 2, -1)  # (B, 2, h*w)
    gather = cell[:, None, :].expand(b, 2, k)  # (B, 2, K)
    bw, bh = size.gather(2, gather).clamp(min=0).unbind(1)  # (B, K) each, in cells
    ox, oy = offset.gather(2, gather).unbind(1)  # (B, K) each
    px, py = cx + ox, cy + oy  # the centres, in cells
    boxes = torch.stack([px - bw / 2, py - bh / 2, px + bw / 2, py + bh / 2], dim=2) * stride
    if image_size is not None:
        boxes[..., 0::2] = boxes[..., 0::2].clamp(0, image_size[1])
        boxes[..., 1::2] = boxes[..., 1::2].clamp(0, image_size[0])
    results: list[Detections] = []
    for i in range(b):
        keep = scores[i] >= score_threshold
        bx, sc, lb = boxes[i][keep], scores[i][keep], labels[i][keep]
        valid = (bx[:, 2] > bx[:, 0]) & (bx[:, 3] > bx[:, 1])
        bx, sc, lb = bx[valid], sc[valid], lb[valid]
        kept = batched_nms(bx, sc, lb, iou_threshold)[:max_detections]
        results.append((bx[kept], sc[kept], lb[kept]))
    return results
