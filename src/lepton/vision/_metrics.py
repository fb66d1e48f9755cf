"""Detection metrics: COCO's mean average precision, computed by the COCO evaluator itself.

``mean_average_precision`` runs ``pycocotools``' ``COCOeval`` (or ``faster_coco_eval``'s,
the same protocol) on the boxes: mAP over IoU 0.50:0.05:0.95 (``map``), at IoU 0.50
(``map_50``) and 0.75 (``map_75``), and the recall of the 100 best detections per image
(``mar_100``). These are the numbers ``torchmetrics``' ``MeanAveragePrecision`` reports
(it calls the same evaluator), without its dependency on torchvision.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from typing import Any

import torch

from lepton.errors import VisionDependencyError, VisionError

__all__ = ["mean_average_precision"]


def _evaluator() -> tuple[Any, Any]:
    try:
        from pycocotools.coco import COCO  # type: ignore[import-untyped]
        from pycocotools.cocoeval import COCOeval  # type: ignore[import-untyped]

        return COCO, COCOeval
    except ImportError:
        pass
    try:
        from faster_coco_eval import COCO as FCOCO  # type: ignore[import-not-found]
        from faster_coco_eval import COCOeval_faster  # type: ignore[import-not-found]

        return FCOCO, COCOeval_faster
    except ImportError:
        raise VisionDependencyError(
            "mAP needs a COCO evaluator; install one: pip install pycocotools "
            "(or pip install 'lepton[vision]')"
        ) from None


def mean_average_precision(
    predictions: Sequence[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
    boxes: Sequence[torch.Tensor],
    labels: Sequence[torch.Tensor],
) -> dict[str, float]:
    """COCO mAP of ``predictions`` (one ``(boxes, scores, labels)`` per image, xyxy) against
    the true ``boxes`` and ``labels`` of the same images.

    Returns:
        ``map`` (IoU 0.50:0.95), ``map_50``, ``map_75`` and ``mar_100``, each in [0, 1].
    """
    if not len(predictions) == len(boxes) == len(labels):
        raise VisionError(
            f"mean_average_precision needs one prediction per image: {len(predictions)} "
            f"predictions, {len(boxes)} images of boxes, {len(labels)} of labels"
        )
    coco_cls, eval_cls = _evaluator()
    classes = sorted(
        {int(v) for lab in labels for v in lab.tolist()}
        | {int(v) for p in predictions for v in p[2].tolist()}
    )
    gt: dict[str, Any] = {
        "images": [{"id": i + 1} for i in range(len(boxes))],
        "categories": [{"id": c + 1} for c in classes],
        "annotations": [],
    }
    dets: list[dict[str, Any]] = []
    for i, (bx, lab) in enumerate(zip(boxes, labels, strict=True)):
        for box, c in zip(bx.tolist(), lab.tolist(), strict=True):
            w, h = box[2] - box[0], box[3] - box[1]
            gt["annotations"].append({"id": len(gt["annotations"]) + 1, "image_id": i + 1,
                                      "category_id": int(c) + 1, "bbox": [box[0], box[1], w, h],
                                      "area": w * h, "iscrowd": 0})  # fmt: skip
    for i, (pb, ps, pl) in enumerate(predictions):
        for box, s, c in zip(pb.tolist(), ps.tolist(), pl.tolist(), strict=True):
            dets.append({"image_id": i + 1, "category_id": int(c) + 1, "score": float(s),
                         "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]]})  # fmt: skip
    if not gt["annotations"]:
        raise VisionError("mean_average_precision needs at least one true box")
    if not dets:
        return {"map": 0.0, "map_50": 0.0, "map_75": 0.0, "mar_100": 0.0}
    with contextlib.redirect_stdout(io.StringIO()):  # the evaluator prints its progress
        truth = coco_cls()
        truth.dataset = gt
        truth.createIndex()
        found = truth.loadRes(dets)
        ev = eval_cls(truth, found, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    stats = [max(0.0, float(v)) for v in ev.stats]  # -1 means "no such boxes": 0
    return {"map": stats[0], "map_50": stats[1], "map_75": stats[2], "mar_100": stats[8]}
