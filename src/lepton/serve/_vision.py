"""A registered object detector behind ``/detect`` and ``/info``.

``lepton deploy digits-det@production`` (and a platform deployment of that version)
serves a :class:`DetectionService` when the version's architecture is
``"vision-centernet"`` (``lp.vision.Detector``; the table in
:mod:`lepton.serve._by_model` decides). The manifest records the classes, the training
image size and the decoding thresholds, so a replica needs nothing but the registry:

* ``POST /detect`` ``{"image": "<base64 PNG or JPEG>", "score_threshold": 0.3,
  "max_detections": 100}`` (or a ``multipart/form-data`` upload, or a raw ``image/png``
  body: the same input forms as ``/predict``): the image, of any size, is resized to the
  training size (the recorded preprocessing), and the answer's ``boxes``
  ``[x1, y1, x2, y2]`` are in the ORIGINAL image's pixels, with ``labels`` (class names),
  ``label_ids`` and ``scores``, best first.
* ``GET /info``: the version, its classes, input size, thresholds and metrics.

:func:`draw_detections` draws an answer on its image with Pillow (the CLI's
``lepton vision detect predict --out`` and the dashboard's Vision page use it).
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any

import torch
from pydantic import BaseModel, ConfigDict, Field

from lepton.errors import RequestError
from lepton.serve._by_model import architecture_name
from lepton.serve._handler import handler
from lepton.serve._service import Service
from lepton.serve._types import Image

if TYPE_CHECKING:
    from lepton.storage import Database
    from lepton.vision import Detector

__all__ = [
    "DETECTOR_ARCHITECTURES",
    "DetectAnswer",
    "DetectRequest",
    "DetectionService",
    "draw_detections",
    "is_detector",
]

#: Architectures served by :class:`DetectionService` (``lp.vision.Detector``).
DETECTOR_ARCHITECTURES = frozenset({"vision-centernet"})
MAX_DETECTIONS = 1000
#: A detector registered without its training size sees images as they come, up to this.
MAX_UNRESIZED_SIDE = 1024
_PALETTE = ("#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4",
            "#42d4f4", "#f032e6", "#bfef45", "#fabed4", "#469990")  # fmt: skip


class DetectRequest(BaseModel):
    """One image to find objects in, and optionally how strict to be."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    image: Image = Field(description="PNG or JPEG, any size: base64 in JSON, bytes in uploads.")
    score_threshold: float | None = Field(
        None, ge=0, le=1, description="Keep detections scoring at least this (default: recorded)."
    )
    max_detections: int | None = Field(
        None, ge=1, le=MAX_DETECTIONS, description="Most detections (default: recorded)."
    )


class DetectAnswer(BaseModel):
    """The objects found, best first; boxes in the sent image's pixels."""

    boxes: list[list[float]] = Field(description="[x1, y1, x2, y2] in the original image's pixels.")
    labels: list[str] = Field(description="Class names.")
    label_ids: list[int] = Field(description="Class indices.")
    scores: list[float]
    width: int = Field(description="The sent image's width in pixels.")
    height: int = Field(description="The sent image's height in pixels.")


def detect_image(
    detector: Detector,
    image: Image,
    *,
    score_threshold: float | None = None,
    max_detections: int | None = None,
) -> DetectAnswer:
    """Run ``detector`` on one image of any size: resized to its training size, boxes
    scaled back to the image's own pixels."""
    width, height = image.size
    size = detector.input_size
    if size is None and max(width, height) > MAX_UNRESIZED_SIDE:
        raise RequestError(
            f"this detector has no recorded input size and the image is {width}x{height}; "
            f"send one at most {MAX_UNRESIZED_SIDE} pixels a side"
        )
    x = image.to_tensor(channels=detector.model.in_channels, size=size)  # (C, h, w)
    in_h, in_w = x.shape[-2:]
    boxes, scores, labels = detector.predict(
        x, score_threshold=score_threshold, max_detections=max_detections
    )[0]
    scale = torch.tensor([width / in_w, height / in_h, width / in_w, height / in_h])
    boxes = boxes * scale  # (m, 4) in the sent image's pixels
    ids = [int(i) for i in labels.tolist()]
    return DetectAnswer(
        boxes=[[round(float(v), 2) for v in box] for box in boxes.tolist()],
        labels=[detector.classes[i] for i in ids], label_ids=ids,
        scores=[float(s) for s in scores.tolist()], width=width, height=height,
    )  # fmt: skip


def draw_detections(image: Any, answer: DetectAnswer | dict[str, Any], *, line: int = 0) -> bytes:
    """``image`` (an :class:`~lepton.serve.Image`, a PIL image, or PNG/JPEG bytes) with
    ``answer``'s boxes, class names and scores drawn on it, as PNG bytes (the best
    detection last: over weaker guesses at the same place, which would hide its label)."""
    from PIL import Image as PILImage
    from PIL import ImageDraw

    if isinstance(image, (bytes, bytearray)):
        image = Image.from_bytes(bytes(image))
    pil = (image.pil if isinstance(image, Image) else image).convert("RGB")
    if max(pil.size) < 256:  # small scenes: enlarge so the labels stay readable
        factor = max(1, 256 // max(pil.size))
        pil = pil.resize((pil.width * factor, pil.height * factor), PILImage.Resampling.NEAREST)
    found = answer.model_dump() if isinstance(answer, DetectAnswer) else answer
    sx, sy = pil.width / max(1, found["width"]), pil.height / max(1, found["height"])
    width = line or max(1, round(min(pil.size) / 128))
    draw = ImageDraw.Draw(pil)
    drawn = list(zip(found["boxes"], found["labels"], found["label_ids"], found["scores"],
                     strict=True))  # fmt: skip
    for box, name, index, score in reversed(drawn):  # worst first: the best on top
        colour = _PALETTE[int(index) % len(_PALETTE)]
        x1, y1, x2, y2 = box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy
        draw.rectangle((x1, y1, x2, y2), outline=colour, width=width)
        text = f"{name} {score:.2f}"
        left, top, right, bottom = draw.textbbox((x1, y1), text)
        lift = bottom - top + 2
        ty = y1 - lift if y1 >= lift else y1  # above the box, or inside it at the top edge
        draw.rectangle((x1, ty, x1 + right - left + 2, ty + lift), fill=colour)
        draw.text((x1 + 1, ty), text, fill="#ffffff")
    buffer = io.BytesIO()
    pil.save(buffer, format="PNG")
    return buffer.getvalue()


class DetectionService(Service):
    """A registered detector version (``lp.vision.Detector``) as a service."""

    def __init__(self, ref: str, *, database: Database | None = None) -> None:
        self.ref = ref
        self.database = database

    def setup(self) -> None:
        from lepton.registry import resolve
        from lepton.vision import Detector

        self.version = resolve(self.ref, database=self.database)
        self.detector = Detector.load(self.version.ref, database=self.database)

    @handler(method="GET")
    def info(self) -> dict[str, Any]:
        """The served version: name, number, classes, input size, thresholds, metrics."""
        net = self.detector.model
        manifest = self.version.manifest
        return {
            "model": self.version.name,
            "version": self.version.version,
            "ref": self.version.ref,
            "kind": "object-detector",
            "classes": list(self.detector.classes),
            "input_channels": net.in_channels,
            "input_size": list(net.input_size) if net.input_size else None,
            "score_threshold": net.score_threshold,
            "iou_threshold": net.iou_threshold,
            "max_detections": net.max_detections,
            "dataset": manifest.get("dataset"),
            "metrics": manifest.get("metrics"),
            "routes": ["/detect"],
        }

    @handler(workers=2, timeout_s=60)
    def detect(self, request: DetectRequest) -> DetectAnswer:
        """The objects in one image, best first, boxes in its own pixels."""
        return detect_image(self.detector, request.image, score_threshold=request.score_threshold,
                            max_detections=request.max_detections)  # fmt: skip


def is_detector(manifest: dict[str, Any]) -> bool:
    """Whether a version's manifest names an object-detector architecture."""
    return architecture_name(manifest) in DETECTOR_ARCHITECTURES
