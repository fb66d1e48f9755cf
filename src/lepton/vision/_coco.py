"""COCO-format annotations: read a user's boxes (:func:`load_coco`) and write scenes out
(:func:`save_coco`), so a detector trains on anyone's images.

The format is COCO's object-detection one: a JSON object with ``images`` (``id``,
``file_name``, optional ``width``/``height``), ``categories`` (``id``, ``name``) and
``annotations`` (``image_id``, ``category_id``, ``bbox`` as ``[x, y, width, height]`` in
pixels; ``iscrowd: 1`` regions are skipped). Category ids may be any integers: labels are
their positions in id order, and ``Scenes.classes`` keeps the names.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lepton.errors import AnnotationError
from lepton.vision._scenes import Scenes

__all__ = ["load_coco", "save_coco"]


def _read_image(path: Path, channels: int, size: tuple[int, int] | None) -> torch.Tensor:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as opened:
            im = opened.convert("L" if channels == 1 else "RGB")
            if size is not None and (im.height, im.width) != size:
                im = im.resize((size[1], size[0]), Image.Resampling.BILINEAR)
            array = np.asarray(im, dtype=np.float32) / 255.0
    except FileNotFoundError:
        raise AnnotationError(
            f"image {path} is listed in the annotations but missing; check images_dir"
        ) from None
    except (UnidentifiedImageError, OSError) as exc:
        raise AnnotationError(f"cannot read image {path}: {exc}") from None
    t = torch.from_numpy(array.copy())
    return t[None] if channels == 1 else t.permute(2, 0, 1)


def load_coco(
    images_dir: str | Path,
    annotations_json: str | Path,
    *,
    channels: int = 1,
    size: tuple[int, int] | None = None,
) -> Scenes:
    """Read COCO-format boxes and their images into :class:`Scenes`.

    Args:
        images_dir: The folder the ``file_name`` entries are relative to.
        annotations_json: The COCO annotation file.
        channels: 1 (grayscale) or 3 (RGB).
        size: ``(height, width)`` to resize every image (and scale its boxes) to; needed
            when the images differ in size. Detectors want multiples of 4.

    Raises:
        AnnotationError: The file is not COCO detection JSON, names an unknown image or
            category, has a malformed box, or an image is missing or unreadable.

    Example:
        >>> scenes = lp.vision.load_coco("photos/", "photos/instances.json")  # doctest: +SKIP
        >>> lp.vision.Detector(classes=scenes.classes).fit(scenes)  # doctest: +SKIP
    """
    if channels not in (1, 3):
        raise AnnotationError(f"channels must be 1 or 3, got {channels}")
    path = Path(annotations_json)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AnnotationError(f"no annotation file at {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AnnotationError(f"{path} is not JSON: {exc}") from None
    if not isinstance(doc, dict) or not all(
        isinstance(doc.get(k), list) for k in ("images", "annotations", "categories")
    ):
        raise AnnotationError(
            f"{path} is not COCO detection JSON: it needs 'images', 'annotations' and "
            f"'categories' lists"
        )
    try:
        categories = sorted((int(c["id"]), str(c.get("name", c["id"]))) for c in doc["categories"])
        images = [(int(im["id"]), str(im["file_name"])) for im in doc["images"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise AnnotationError(f"{path}: an image or category lacks {exc} (id, file_name)") from None
    if not images:
        raise AnnotationError(f"{path} lists no images")
    label_of = {cid: i for i, (cid, _) in enumerate(categories)}
    row_of = {iid: i for i, (iid, _) in enumerate(images)}
    per_image: list[list[tuple[list[float], int]]] = [[] for _ in images]
    for ann in doc["annotations"]:
        _add(ann, per_image, row_of, label_of, path)
    root = Path(images_dir)
    pictures = [_read_image(root / name, channels, None) for _, name in images]
    shapes = {tuple(p.shape[1:]) for p in pictures}
    target = size if size is not None else None
    if target is None and len(shapes) > 1:
        raise AnnotationError(
            f"the images differ in size ({sorted(shapes)[:3]}...); pass size=(height, width) "
            f"to resize them"
        )
    tensors, all_boxes = [], []
    for (_, name), picture, objs in zip(images, pictures, per_image, strict=True):
        h, w = picture.shape[1:]
        boxes = torch.tensor([b for b, _ in objs], dtype=torch.float32).reshape(-1, 4)
        if target is not None and (h, w) != target:
            picture = _read_image(root / name, channels, target)
            boxes = boxes * torch.tensor([target[1] / w, target[0] / h] * 2)
        tensors.append(picture)
        all_boxes.append(boxes)
    return Scenes(
        images=torch.stack(tensors),
        boxes=all_boxes,
        labels=[torch.tensor([c for _, c in objs], dtype=torch.int64) for objs in per_image],
        classes=[name for _, name in categories],
        name=path.stem,
    )


def _add(
    ann: Any,
    per_image: list[list[tuple[list[float], int]]],
    row_of: dict[int, int],
    label_of: dict[int, int],
    path: Path,
) -> None:
    """Check one annotation and file it under its image (crowd regions are skipped)."""
    try:
        image_id, category_id, bbox = int(ann["image_id"]), int(ann["category_id"]), ann["bbox"]
    except (KeyError, TypeError, ValueError):
        raise AnnotationError(
            f"{path}: every annotation needs image_id, category_id and bbox, got {ann!r}"
        ) from None
    if ann.get("iscrowd", 0):
        return
    if image_id not in row_of:
        raise AnnotationError(f"{path}: an annotation names image_id {image_id}, not in 'images'")
    if category_id not in label_of:
        raise AnnotationError(
            f"{path}: an annotation names category_id {category_id}, not in 'categories'"
        )
    if not (
        isinstance(bbox, list) and len(bbox) == 4 and all(isinstance(v, int | float) for v in bbox)
    ):
        raise AnnotationError(f"{path}: bbox must be [x, y, width, height], got {bbox!r}")
    x, y, w, h = (float(v) for v in bbox)
    if w <= 0 or h <= 0:
        raise AnnotationError(f"{path}: bbox {bbox} has a width or height <= 0")
    per_image[row_of[image_id]].append(([x, y, x + w, y + h], label_of[category_id]))


def save_coco(scenes: Scenes, folder: str | Path, *, name: str = "annotations.json") -> Path:
    """Write ``scenes`` as PNG images and a COCO annotation file in ``folder``; returns the
    annotation file's path (``load_coco(folder, path)`` reads them back)."""
    from PIL import Image

    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    doc: dict[str, Any] = {
        "images": [],
        "annotations": [],
        "categories": [{"id": i + 1, "name": c} for i, c in enumerate(scenes.classes)],
    }
    for i, image in enumerate(scenes.images):
        pixels = (image.clamp(0, 1) * 255).round().to(torch.uint8)
        array = pixels[0].numpy() if pixels.shape[0] == 1 else pixels.permute(1, 2, 0).numpy()
        file_name = f"{i:06d}.png"
        Image.fromarray(array).save(root / file_name)
        height, width = int(image.shape[1]), int(image.shape[2])
        doc["images"].append(
            {"id": i + 1, "file_name": file_name, "height": height, "width": width}
        )
        for box, label in zip(scenes.boxes[i].tolist(), scenes.labels[i].tolist(), strict=True):
            x1, y1, x2, y2 = box
            doc["annotations"].append({"id": len(doc["annotations"]) + 1, "image_id": i + 1,
                                       "category_id": int(label) + 1, "iscrowd": 0,
                                       "bbox": [x1, y1, x2 - x1, y2 - y1],
                                       "area": (x2 - x1) * (y2 - y1)})  # fmt: skip
    out = root / name
    out.write_text(json.dumps(doc), encoding="utf-8")
    return out
