"""``Detector``: train the CenterNet-style detector with ``lp.fit``, predict boxes, and
measure COCO mAP.

Training is :func:`lepton.train.fit` itself, as :mod:`lepton.graph` does for embeddings:
the dataset's features are the images and its (regression) targets are the dense
CenterNet maps of :func:`~lepton.vision._detector.encode`, one ``(C + 4, h, w)`` tensor
per image; the model returns a tensor of that shape and the ``loss=`` hook is the
CenterNet loss. Every ``lp.fit`` option (schedules, checkpoints, callbacks, tracking,
``workers=``) applies unchanged.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from lepton.data import Dataset
from lepton.errors import NotFittedError, VisionError
from lepton.train import FitResult, fit
from lepton.vision._detector import CenterNet, Detections, centernet_loss, decode, encode
from lepton.vision._metrics import mean_average_precision
from lepton.vision._scenes import Scenes

if TYPE_CHECKING:
    from lepton.storage import Database

__all__ = ["Detector", "detection_dataset"]


def detection_dataset(scenes: Scenes, num_classes: int, stride: int = CenterNet.stride) -> Dataset:
    """``scenes`` as a :class:`~lepton.data.Dataset` ``lp.fit`` trains a
    :class:`CenterNet` on: images as features, their ``(C + 4, h, w)`` maps as targets."""
    _, _, h, w = scenes.images.shape
    if h % stride or w % stride:
        raise VisionError(
            f"detection images must be multiples of {stride} pixels a side, got {h}x{w}; "
            f"load them with size=(height, width) (lp.vision.load_coco) or pad them"
        )
    grid = (h // stride, w // stride)
    targets = torch.stack(
        [
            encode(b, lab, num_classes, grid, stride)
            for b, lab in zip(scenes.boxes, scenes.labels, strict=True)
        ]
    )  # (N, C + 4, h, w)
    return Dataset(scenes.images, targets, name=scenes.name, task="regression")


class Detector:
    """An anchor-free object detector (CenterNet-style, :mod:`lepton.vision._detector`).

    Args:
        classes: Class names, or their number (names ``"0"``, ``"1"``, ...).
        in_channels: Image channels.
        width: The network's channels at stride 4.
        blocks: Residual blocks at stride 4.

    Example:
        >>> train = lp.vision.digit_scenes("train", n=8000, seed=0)  # doctest: +SKIP
        >>> det = lp.vision.Detector(classes=train.classes).fit(train, epochs=12)  # doctest: +SKIP
        >>> det.evaluate(lp.vision.digit_scenes("test", n=1000, seed=1))  # doctest: +SKIP
        {'map': 0.7..., 'map_50': 0.9..., ...}
    """

    def __init__(
        self,
        classes: Sequence[str] | int = 10,
        *,
        in_channels: int = 1,
        width: int = 64,
        blocks: int = 4,
        score_threshold: float = 0.3,
        iou_threshold: float = 0.5,
        max_detections: int = 100,
    ) -> None:
        names = [str(i) for i in range(classes)] if isinstance(classes, int) else list(classes)
        if len(names) < 1:
            raise VisionError("a Detector needs at least one class")
        if width < 8 or blocks < 0:
            raise VisionError(f"width must be >= 8 and blocks >= 0, got {width}, {blocks}")
        if not (0.0 <= score_threshold <= 1.0 and 0.0 < iou_threshold <= 1.0):
            raise VisionError(
                f"score_threshold must be in [0, 1] and iou_threshold in (0, 1], got "
                f"{score_threshold}, {iou_threshold}"
            )
        if max_detections < 1:
            raise VisionError(f"max_detections must be >= 1, got {max_detections}")
        self.classes = names
        self.config: dict[str, Any] = {
            "in_channels": in_channels, "width": width, "blocks": blocks,
            "classes": names, "score_threshold": score_threshold,
            "iou_threshold": iou_threshold, "max_detections": max_detections,
        }  # fmt: skip
        self.model = CenterNet(len(names), **self.config)
        self.result: FitResult | None = None
        self.fitted = False

    @classmethod
    def from_model(cls, model: CenterNet) -> Detector:
        """A trained :class:`Detector` around ``model`` (e.g. ``lp.load_model(ref)`` of a
        registered detector): its classes, input size and thresholds are the model's."""
        if not isinstance(model, CenterNet):
            raise VisionError(
                f"expected a vision-centernet model, got {type(model).__name__}; register "
                f"a detector with lp.register(detector, name)"
            )
        det = cls.__new__(cls)
        det.classes = list(model.classes)
        det.config = {
            "in_channels": model.in_channels, "width": model.width, "blocks": model.blocks,
            "classes": det.classes, "score_threshold": model.score_threshold,
            "iou_threshold": model.iou_threshold, "max_detections": model.max_detections,
        }  # fmt: skip
        det.model = model.eval()
        det.result, det.fitted = None, True
        return det

    @classmethod
    def load(cls, ref: str, *, database: Database | None = None) -> Detector:
        """A registered detector (``"digits-det:1"``, ``"digits-det@production"``), rebuilt
        from its manifest and safetensors weights by :func:`lepton.registry.load_model`."""
        from lepton.registry import load_model

        return cls.from_model(load_model(ref, database=database))  # type: ignore[arg-type]

    @property
    def input_size(self) -> tuple[int, int] | None:
        """``(height, width)`` of the training images (``None`` before ``fit``)."""
        size = self.model.input_size
        return (int(size[0]), int(size[1])) if size else None

    def fit(
        self,
        scenes: Scenes,
        *,
        epochs: int = 10,
        batch_size: int = 32,
        lr: float = 2e-3,
        schedule: str | None = "onecycle",
        seed: int = 0,
        quiet: bool = True,
        **fit_options: Any,
    ) -> Detector:
        """Train on ``scenes`` with ``lp.fit`` (extra keyword arguments go to it); returns
        ``self``; ``self.result`` holds the :class:`~lepton.train.FitResult`."""
        if not isinstance(scenes, Scenes):
            raise VisionError(
                "Detector.fit takes Scenes: lp.vision.digit_scenes(...) or lp.vision.load_coco(...)"
            )
        if len(scenes.classes) != len(self.classes):
            raise VisionError(
                f"the scenes have {len(scenes.classes)} classes, this Detector "
                f"{len(self.classes)}; build it with Detector(classes=scenes.classes)"
            )
        if scenes.images.shape[1] != self.model.in_channels:
            raise VisionError(
                f"the images have {scenes.images.shape[1]} channels, the Detector "
                f"{self.model.in_channels}; build it with in_channels={scenes.images.shape[1]}"
            )
        train = detection_dataset(scenes, len(self.classes), self.model.stride)
        torch.manual_seed(seed)  # the weights' initialisation, too, follows the seed
        size = list(scenes.images.shape[-2:])
        self.model = CenterNet(len(self.classes), **self.config, input_size=size)
        self.result = fit(self.model, train, epochs=epochs, batch_size=batch_size, lr=lr,
                          schedule=schedule, seed=seed, quiet=quiet, loss=centernet_loss,
                          **fit_options)  # fmt: skip
        self.model.eval()
        self.fitted = True
        return self

    @torch.no_grad()
    def predict(
        self,
        images: torch.Tensor,
        *,
        score_threshold: float | None = None,
        iou_threshold: float | None = None,
        max_detections: int | None = None,
        batch_size: int = 64,
    ) -> list[Detections]:
        """Detect objects in ``images`` ``(N, C, H, W)`` (or one ``(C, H, W)`` image) in
        [0, 1]: one ``(boxes, scores, labels)`` per image, boxes ``x1, y1, x2, y2`` in
        pixels, best first. Sides that are not multiples of 4 are padded (boxes unchanged).
        The thresholds default to the Detector's own (recorded when it is registered)."""
        net = self.model
        score_threshold = net.score_threshold if score_threshold is None else score_threshold
        iou_threshold = net.iou_threshold if iou_threshold is None else iou_threshold
        max_detections = net.max_detections if max_detections is None else max_detections
        if not self.fitted:
            raise NotFittedError("this Detector is not trained yet; call fit(scenes) first")
        if images.dim() == 3:
            images = images[None]
        if images.dim() != 4 or images.shape[1] != self.model.in_channels:
            raise VisionError(
                f"predict takes images (N, {self.model.in_channels}, H, W), got "
                f"{tuple(images.shape)}"
            )
        h, w = images.shape[-2:]
        s = self.model.stride
        padded = F.pad(images.float(), (0, (-w) % s, 0, (-h) % s))
        self.model.eval()
        device = next(self.model.parameters()).device
        found: list[Detections] = []
        for start in range(0, len(padded), batch_size):
            out = self.model(padded[start : start + batch_size].to(device)).cpu()
            found += decode(out, s, score_threshold=score_threshold, iou_threshold=iou_threshold,
                            max_detections=max_detections, image_size=(h, w))  # fmt: skip
        return found

    def evaluate(self, scenes: Scenes, *, iou_threshold: float = 0.5) -> dict[str, float]:
        """COCO mAP on ``scenes`` (every detection scoring >= 0.01 counts, as in COCO),
        plus ``ms_per_image`` (inference and decoding, batches of 64)."""
        started = time.perf_counter()
        predictions = self.predict(scenes.images, score_threshold=0.01, iou_threshold=iou_threshold)
        ms = (time.perf_counter() - started) * 1000 / max(1, len(scenes))
        return mean_average_precision(predictions, scenes.boxes, scenes.labels) | {
            "ms_per_image": ms
        }
