"""The vision recipes. Detection (here): "train a detector, measure its COCO mAP, register
it"; classification with augmentation (:func:`classify`, below); generation
(:func:`generate`, from :mod:`lepton.vision._generate_recipe`).

``lepton vision detect train`` and a platform ``detect`` job run this recipe with a
:class:`DetectConfig`, whose defaults are defined here once: scenes of real digits
(:func:`~lepton.vision.digit_scenes`, the test scenes from test-split digits only) or, on
this machine only, a COCO folder (``run(config, coco=(images_dir, annotations_json))``:
a path is an argument of :func:`run`, never a config field, so an API caller cannot name
a server path) -> a :class:`~lepton.vision.Detector` trained with ``lp.fit`` -> mAP@0.5
and mAP@[.5:.95] on the held-out scenes -> registered when asked (weights in
safetensors; classes, the training image size and the decoding thresholds in the
manifest). Everything is logged to one tracking run.

Example:
    >>> config = DetectConfig.checked(train_scenes=2000, epochs=6, register="digits-det")
    >>> result = run(config, registrar=lp.register)  # doctest: +SKIP
    >>> result.metrics["map_50"]  # doctest: +SKIP
    0.93
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import ConfigDict, Field, field_validator
from torch import nn

from lepton.data import Dataset
from lepton.errors import ConfigError
from lepton.storage import Database
from lepton.tracking import start_run
from lepton.train.recipe import (
    RecipeConfig,
    TrainConfig,
    TrainOutcome,
    register_when_asked,
    require_registrar,
)
from lepton.vision._coco import load_coco
from lepton.vision._detect import Detector
from lepton.vision._generate_recipe import GenerateConfig, GenerateResult, generate
from lepton.vision._scenes import Scenes, digit_scenes

__all__ = [
    "ClassifyConfig",
    "DetectConfig",
    "DetectResult",
    "GenerateConfig",
    "GenerateResult",
    "ScenesRecord",
    "classify",
    "generate",
    "run",
    "scene_options",
]


class DetectConfig(RecipeConfig):
    """What to train: the scenes, the detector's size and its training settings. Checked
    strictly and frozen; a platform ``DetectJob`` is this class plus its ``kind``."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, serialize_by_alias=True)

    dataset: Literal["mnist", "fashion-mnist"] = Field(
        "mnist", description="Where the scenes' objects come from (digit_scenes)."
    )
    train_scenes: int = Field(3000, ge=8, le=200_000, description="Training scenes.")
    test_scenes: int = Field(500, ge=1, le=50_000, description="Held-out scenes (test digits).")
    size: int = Field(64, ge=16, le=512, description="Scene side in pixels (a multiple of 4).")
    width: int = Field(32, ge=8, le=512, description="The network's channels at stride 4.")
    blocks: int = Field(3, ge=0, le=32, description="Residual blocks at stride 4.")
    epochs: int = Field(4, ge=1, le=1000, description="Passes over the training scenes.")
    batch_size: int = Field(32, ge=1, le=4096, description="Scenes per step.")
    lr: float = Field(3e-3, gt=0, le=10, description="Peak AdamW learning rate (one-cycle).")
    score_threshold: float = Field(
        0.3, ge=0, le=1, description="Served detections score at least this (recorded)."
    )
    iou_threshold: float = Field(0.5, gt=0, le=1, description="Non-maximum suppression IoU.")
    max_detections: int = Field(100, ge=1, le=1000, description="Detections per image.")
    seed: int = Field(0, ge=0, le=2**32 - 1)
    register_as: str | None = Field(
        None, alias="register", description="Register the detector under this name."
    )

    @field_validator("size")
    @classmethod
    def _multiple_of_4(cls, value: int) -> int:
        if value % 4:
            raise ValueError(f"size must be a multiple of 4 (the detector's stride), got {value}")
        return value


@dataclass(frozen=True)
class ScenesRecord:
    """What the registry records of the training scenes (name, rows, fingerprint: the
    version's lineage; ``input_shape``: one image ``[C, H, W]``)."""

    scenes: Scenes

    @property
    def name(self) -> str:
        return self.scenes.name

    @property
    def input_shape(self) -> list[int]:
        return [int(d) for d in self.scenes.images.shape[1:]]

    def __len__(self) -> int:
        return len(self.scenes)

    def fingerprint(self) -> str:
        digest = hashlib.sha256(self.scenes.images.numpy().tobytes())
        for boxes, labels in zip(self.scenes.boxes, self.scenes.labels, strict=True):
            digest.update(boxes.numpy().tobytes())
            digest.update(labels.numpy().tobytes())
        return digest.hexdigest()


@dataclass
class DetectResult:
    """What a detection run measured and made."""

    metrics: dict[str, float]
    losses: list[float]
    classes: list[str]
    train_scenes: int
    test_scenes: int
    seconds: float
    train_seconds: float
    run_id: int | None = None
    registered: str | None = None
    detector: Detector | None = field(default=None, repr=False)

    def to_json(self) -> dict[str, Any]:
        """JSON-safe, without the fitted detector."""
        return {
            "metrics": self.metrics, "losses": self.losses, "classes": self.classes,
            "train_scenes": self.train_scenes, "test_scenes": self.test_scenes,
            "seconds": self.seconds, "train_seconds": self.train_seconds,
            "run_id": self.run_id, "registered": self.registered,
        }  # fmt: skip


def scene_options(size: int, dataset: str = "mnist") -> dict[str, Any]:
    """:func:`~lepton.vision.digit_scenes` options for a ``size`` canvas: its default ink
    heights (14 to 34 pixels on 64) scaled to the canvas."""
    heights = (max(4, size * 14 // 64), min(size, size * 34 // 64))
    return {"size": size, "dataset": dataset, "digit_size": heights}


def _data(config: DetectConfig, coco: tuple[Path, Path] | None) -> tuple[Scenes, Scenes, str]:
    if coco is None:
        options = scene_options(config.size, config.dataset)
        train = digit_scenes("train", n=config.train_scenes, seed=config.seed, **options)
        test = digit_scenes("test", n=config.test_scenes, seed=config.seed + 1, **options)
        return train, test, f"{config.dataset} digit scenes"
    images_dir, annotations = coco
    every = load_coco(images_dir, annotations, size=(config.size, config.size))
    n = len(every)
    if n < 2:
        raise ConfigError(f"{annotations} has {n} image(s); a detector needs >= 2 (train and test)")
    held = max(1, min(config.test_scenes, n // 5))  # the last fifth (at most) is held out
    return every.subset(range(n - held)), every.subset(range(n - held, n)), f"COCO {every.name}"


def run(
    config: DetectConfig,
    *,
    registrar: Callable[..., Any] | None = None,
    coco: tuple[Path, Path] | None = None,
    database: Database | None = None,
    say: Callable[[str], None] | None = None,
    run_name: str | None = None,
    tags: dict[str, Any] | None = None,
    on_run: Callable[[int], None] | None = None,
    num_threads: int | None = None,
) -> DetectResult:
    """Train, test (COCO mAP) and, when ``config.register_as`` is set, register a
    detector, tracked as one run.

    Args:
        config: What to train.
        registrar: Registers the detector, e.g. :func:`lepton.registry.register`.
        coco: ``(images_dir, annotations_json)``: train on your own COCO boxes instead
            of digit scenes (resized to ``config.size``; the last fifth, at most
            ``test_scenes`` images, is held out).
        database: The metadata database for the run and the registry.
        say: Receives one line at each step, e.g. ``print``.
        run_name: The tracking run's name.
        tags: The tracking run's tags.
        on_run: Called with the run's id as soon as it starts.
        num_threads: Torch CPU threads while training (default: torch's).

    Raises:
        ConfigError: ``register`` is set but no ``registrar`` was given.
        AnnotationError: The COCO files cannot be read.
    """
    tell = say or (lambda _: None)
    require_registrar(config, registrar)
    started = time.perf_counter()
    train, test, source = _data(config, coco)
    tell(f"{source}: {len(train):,} training and {len(test):,} held-out images of "
         f"{config.size}x{config.size}, {len(train.classes)} classes")  # fmt: skip
    name = run_name or f"detect-{config.dataset if coco is None else 'coco'}"
    params = config.model_dump(mode="json", by_alias=True)
    with start_run(name, params=params, tags=tags, database=database) as tracked:
        if on_run is not None:
            on_run(tracked.id)
        det = Detector(
            classes=train.classes, in_channels=int(train.images.shape[1]), width=config.width,
            blocks=config.blocks, score_threshold=config.score_threshold,
            iou_threshold=config.iou_threshold, max_detections=config.max_detections,
        )  # fmt: skip
        tell(f"training width={config.width} blocks={config.blocks} for {config.epochs} epochs")
        fit_options: dict[str, Any] = {"num_threads": num_threads} if num_threads else {}
        det.fit(train, epochs=config.epochs, batch_size=config.batch_size, lr=config.lr,
                seed=config.seed, **fit_options)  # fmt: skip
        assert det.result is not None
        losses = [float(r.train["loss"]) for r in det.result.history]
        for epoch in sorted({1, len(losses) // 2, len(losses)} - {0}):
            tell(f"epoch {epoch}/{config.epochs}: loss {losses[epoch - 1]:.4f}")
        with torch.inference_mode():
            metrics = det.evaluate(test, iou_threshold=config.iou_threshold)
        tracked.log_metrics({f"test_{k}": v for k, v in metrics.items()}, step=0)
        tell(
            f"test ({len(test):,} images): mAP@0.5 {metrics['map_50']:.4f}, mAP@[.5:.95] "
            f"{metrics['map']:.4f}, {metrics['ms_per_image']:.2f} ms/image"
        )
        registered = register_when_asked(
            config, registrar, det, say=tell, metrics=metrics, dataset=ScenesRecord(train),
            run=tracked, database=database,
            description=f"CenterNet-style detector on {source} (width {config.width}, "
            f"{config.blocks} blocks, {config.epochs} epochs)",
        )  # fmt: skip
        return DetectResult(
            metrics=metrics, losses=losses, classes=list(train.classes),
            train_scenes=len(train), test_scenes=len(test),
            seconds=time.perf_counter() - started, train_seconds=det.result.seconds,
            run_id=tracked.id, registered=registered, detector=det,
        )  # fmt: skip


# -- classification with augmentation --------------------------------------------------------


class ClassifyConfig(TrainConfig):
    """A ``train`` recipe (:class:`~lepton.train.recipe.TrainConfig`: model, data, epochs,
    ...) plus image augmentation, every option off by default. A platform
    ``ClassifyJob`` is this class plus its ``kind``; :func:`classify` runs it.

    Attributes:
        padding: Random crop after padding each side by this many pixels (0: none).
        hflip: Flip half the training images left-right (clothes, not digits).
        erasing: Probability of erasing one random rectangle of a training image.
        mixup, cutmix: Beta ``alpha`` of MixUp / CutMix (0: off; both set: one of the two
            per batch, even odds).
        label_smoothing: Cross-entropy against targets smoothed by this much.
        tta: Also report ``tta_accuracy`` on the test split (test-time augmentation:
            shifts, and the mirror when ``hflip``).
    """

    padding: int = Field(0, ge=0, le=16, description="Random-crop padding in pixels.")
    hflip: bool = Field(False, description="Random horizontal flips (not for digits).")
    erasing: float = Field(0.0, ge=0, le=1, description="Random-erasing probability.")
    mixup: float = Field(0.0, ge=0, le=10, description="MixUp alpha (0: off).")
    cutmix: float = Field(0.0, ge=0, le=10, description="CutMix alpha (0: off).")
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="Label-smoothing epsilon.")
    tta: bool = Field(False, description="Report test-time-augmentation accuracy too.")


def _hooks(config: ClassifyConfig) -> dict[str, Any]:
    """The ``train.recipe.run`` hooks that ``config``'s augmentation options make."""
    from lepton.data import list_datasets
    from lepton.vision._augment import (
        Augment,
        CutMix,
        MixUp,
        RandomMix,
        label_smoothing,
        tta_accuracy,
    )

    hooks: dict[str, Any] = {}
    if config.padding or config.hflip or config.erasing:
        hooks["augment"] = Augment(config.padding, hflip=config.hflip, erasing=config.erasing)
    if config.mixup or config.cutmix:
        classes = {d.name: d.num_classes for d in list_datasets()}.get(config.data) or 0
        if classes < 2:
            raise ConfigError(f"mixup and cutmix need a classification dataset; {config.data} "
                              f"is not one")  # fmt: skip
        if config.mixup and config.cutmix:
            mix: Any = RandomMix(classes, mixup_alpha=config.mixup, cutmix_alpha=config.cutmix)
        else:
            mix = MixUp(classes, config.mixup) if config.mixup else CutMix(classes, config.cutmix)
        hooks["batch_transform"] = mix
    if config.label_smoothing:
        hooks["loss"] = label_smoothing(config.label_smoothing)
    if config.tta:

        def extra(model: nn.Module, test: Dataset) -> dict[str, float]:
            return {"tta_accuracy": tta_accuracy(model, test, hflip=config.hflip)}

        hooks["extra_metrics"] = extra
    return hooks


def classify(config: ClassifyConfig, **options: Any) -> TrainOutcome:
    """Train, test, save and register as :func:`lepton.train.recipe.run` does, with
    ``config``'s augmentation on the training batches (``options`` go to that ``run``:
    ``registrar=``, ``save_to=``, ``database=``, ...).

    Example:
        >>> config = ClassifyConfig(model="resnet", data="fashion-mnist", padding=2,
        ...                         hflip=True, label_smoothing=0.1, tta=True)
        >>> outcome = classify(config, registrar=lp.register)  # doctest: +SKIP
        >>> outcome.metrics["tta_accuracy"]  # doctest: +SKIP
    """
    from lepton.train import recipe as train_recipe

    return train_recipe.run(config, **options, **_hooks(config))
