"""Computer vision on Lepton's data and training loop: object detection on scenes of real
digits (or your own COCO-format boxes) and image classification with augmentation.

Detection: :func:`digit_scenes` makes reproducible scenes of MNIST digits with their boxes,
:class:`Detector` (CenterNet-style, anchor-free) trains through ``lp.fit`` and reports COCO
mAP; :func:`load_coco` / :func:`save_coco` read and write COCO annotations.

Classification: :class:`Augment` (per-image random crops, flips, erasing) as a dataset's
transform, :class:`MixUp` / :class:`CutMix` / :class:`RandomMix` as ``lp.fit``'s
``batch_transform=``, :func:`label_smoothing` as its ``loss=``, and :func:`tta_predict` /
:func:`tta_accuracy` for test-time augmentation.

Generation: :class:`Generator` (a class-conditional DDPM with DDIM sampling, or a
conditional VAE) trains through ``lp.fit`` and ``sample(n, label=)``s uint8 images;
:func:`frechet_distance`, :func:`label_accuracy` and :func:`sample_quality` measure them
with a classifier of Lepton's own (not the Inception FID).

torchvision (``pip install 'lepton[vision]'``) supplies non-maximum suppression when it
works with the installed torch; without it the same algorithm runs in plain torch.
"""

from lepton.vision._augment import (
    Augment,
    CutMix,
    MixUp,
    RandomMix,
    label_smoothing,
    tta_accuracy,
    tta_predict,
)
from lepton.vision._coco import load_coco, save_coco
from lepton.vision._detect import Detector, detection_dataset
from lepton.vision._detector import CenterNet, centernet_loss, decode, encode
from lepton.vision._generator import Generator, to_png
from lepton.vision._metrics import mean_average_precision
from lepton.vision._ops import batched_nms, box_iou
from lepton.vision._quality import frechet_distance, label_accuracy, sample_quality
from lepton.vision._scenes import INK, Scenes, digit_scenes

__all__ = [
    "INK",
    "Augment",
    "CenterNet",
    "CutMix",
    "Detector",
    "Generator",
    "MixUp",
    "RandomMix",
    "Scenes",
    "batched_nms",
    "box_iou",
    "centernet_loss",
    "decode",
    "detection_dataset",
    "digit_scenes",
    "encode",
    "frechet_distance",
    "label_accuracy",
    "label_smoothing",
    "load_coco",
    "mean_average_precision",
    "sample_quality",
    "save_coco",
    "to_png",
    "tta_accuracy",
    "tta_predict",
]
