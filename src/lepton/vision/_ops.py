"""Box operations: IoU and class-aware non-maximum suppression.

``batched_nms`` is ``torchvision.ops.batched_nms`` when torchvision imports and works with
the installed torch (``pip install 'lepton[vision]'``: ``torchvision==0.28.*``, the release
built for torch 2.13). A torchvision wheel built for another torch (e.g. the CUDA wheel
beside a CPU torch) fails at import; then the same greedy algorithm runs in plain torch
(:func:`nms_torch`, equal results: ``tests/unit/test_vision.py`` compares them when
torchvision is usable).
"""

from __future__ import annotations

import functools
from types import ModuleType

import torch

from lepton.errors import VisionDependencyError

__all__ = ["batched_nms", "box_iou", "nms_torch", "torchvision_or_none", "torchvision_required"]


@functools.cache
def _load_torchvision() -> tuple[ModuleType | None, str]:
    try:
        import torchvision  # type: ignore[import-not-found]
        import torchvision.ops  # type: ignore[import-not-found]  # its compiled ops load here
    except ImportError:
        return None, "torchvision is not installed"
    except (RuntimeError, OSError) as exc:  # built for another torch / CUDA
        return None, f"torchvision does not work with torch {torch.__version__}: {exc}"
    return torchvision, ""


def torchvision_or_none() -> ModuleType | None:
    """torchvision when it imports and its compiled ops work, else ``None``."""
    return _load_torchvision()[0]


def torchvision_required(what: str) -> ModuleType:
    """torchvision, or a :class:`VisionDependencyError` that says how to install it."""
    module, why = _load_torchvision()
    if module is None:
        raise VisionDependencyError(
            f"{what} needs torchvision ({why}); install the release built for torch 2.13 "
            f"from the index your torch came from: pip install 'torchvision==0.28.*' "
            f"(CPU torch: --index-url https://download.pytorch.org/whl/cpu)"
        )
    return module


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of every box in ``a`` ``(n, 4)`` with every box in ``b`` ``(m, 4)``, xyxy."""
    area_a = (a[:, 2] - a[:, 0]).clamp(min=0) * (a[:, 3] - a[:, 1]).clamp(min=0)  # (n,)
    area_b = (b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0)  # (m,)
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])  # (n, m, 2)
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])  # (n, m, 2)
    inter = (rb - lt).clamp(min=0).prod(dim=2)  # (n, m)
    return inter / (area_a[:, None] + area_b[None, :] - inter).clamp(min=1e-9)


def nms_torch(
    boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor, iou_threshold: float
) -> torch.Tensor:
    """Greedy class-aware NMS in plain torch: the indices kept, by decreasing score.

    Boxes of different ``idxs`` never suppress each other (each class is shifted to its own
    region of the plane, as torchvision does)."""
    if boxes.numel() == 0:
        return torch.empty(0, dtype=torch.int64, device=boxes.device)
    shifted = boxes + (idxs.to(boxes) * (boxes.max() + 1))[:, None]
    order = scores.argsort(descending=True)
    iou = box_iou(shifted[order], shifted[order])  # (n, n) in score order
    suppressed = torch.zeros(len(order), dtype=torch.bool)
    keep: list[int] = []
    for i in range(len(order)):
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed |= iou[i] > iou_threshold
    return order[torch.tensor(keep, dtype=torch.int64, device=boxes.device)]


def batched_nms(
    boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor, iou_threshold: float
) -> torch.Tensor:
    """``torchvision.ops.batched_nms`` (or :func:`nms_torch` without a usable torchvision)."""
    tv = torchvision_or_none()
    if tv is not None:
        return tv.ops.batched_nms(boxes, scores, idxs, iou_threshold)  # type: ignore[no-any-return]
    return nms_torch(boxes, scores, idxs, iou_threshold)
