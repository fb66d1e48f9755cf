"""``distill``: train a small student on a large teacher's softened outputs, via ``lp.fit``.

There is no second training loop: :func:`lepton.fit` takes a ``loss=`` hook, and
:class:`DistillationLoss` is one. On every batch it runs the teacher under ``no_grad`` and
returns Hinton et al.'s (2015) objective::

    alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T))
        + (1 - alpha) * cross_entropy(student, labels)

The ``T^2`` keeps the soft term's gradients on the scale of the hard term's as ``T``
grows, so ``alpha`` means the same at every temperature.
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lepton.compress._report import Compressed, CompressReport, parameter_count, stored_size
from lepton.compress._source import (
    DataArg,
    ModelArg,
    RegisterArg,
    check_inputs,
    dataset,
    figures,
    open_source,
    publish,
    test_accuracy,
)
from lepton.errors import CompressionError
from lepton.storage import Database
from lepton.train import fit, resolve_device

__all__ = ["DistillationLoss", "distill"]


class DistillationLoss:
    """The ``loss=`` hook of :func:`lepton.fit` that distills ``teacher`` into the model
    being trained.

    Args:
        teacher: Any module mapping a batch to logits (an ONNX model too); kept in eval
            mode and never trained.
        temperature: Softens both distributions (``T > 0``; 1 leaves them as they are).
        alpha: Weight of the soft (teacher) term, in [0, 1]; ``1 - alpha`` weighs the
            cross-entropy with the true labels.

    Example:
        >>> lp.fit(student, train, loss=DistillationLoss(teacher, 4.0, 0.7))  # doctest: +SKIP
    """

    def __init__(self, teacher: nn.Module, temperature: float = 4.0, alpha: float = 0.7) -> None:
        if not (isinstance(temperature, int | float) and math.isfinite(temperature)
                and temperature > 0):  # fmt: skip
            raise CompressionError(f"temperature must be > 0, got {temperature!r}; e.g. 4.0")
        if not (isinstance(alpha, int | float) and 0 <= alpha <= 1):
            raise CompressionError(f"alpha must be in [0, 1], got {alpha!r}; e.g. 0.7")
        self.teacher = teacher.eval()
        self.temperature = float(temperature)
        self.alpha = float(alpha)
        self.calls = 0

    def __call__(
        self, outputs: torch.Tensor, targets: torch.Tensor, inputs: torch.Tensor
    ) -> torch.Tensor:
        """The distillation loss of one batch (``outputs``: the student's logits)."""
        self.calls += 1
        with torch.no_grad():
            teacher = self.teacher(inputs).to(outputs.device, torch.float32)  # (B, K)
        t = self.temperature
        soft = F.kl_div(
            F.log_softmax(outputs.float() / t, dim=1),
            F.log_softmax(teacher / t, dim=1),
            reduction="batchmean",
            log_target=True,
        ) * (t * t)
        if self.alpha == 1:
            return soft
        return self.alpha * soft + (1 - self.alpha) * F.cross_entropy(outputs, targets)


def distill(
    teacher: ModelArg,
    student: nn.Module,
    train: DataArg,
    temperature: float = 4.0,
    alpha: float = 0.7,
    epochs: int = 3,
    *,
    val: DataArg | None = None,
    batch_size: int = 64,
    lr: float = 1e-3,
    seed: int = 0,
    device: str = "auto",
    test: DataArg | None = None,
    register: RegisterArg = None,
    database: Database | None = None,
    quiet: bool = True,
) -> Compressed:
    """Train ``student`` (in place) to imitate ``teacher`` with :func:`lepton.fit`.

    Args:
        teacher: The large model: an ``nn.Module`` or a registry reference (an ONNX
            version too); it only runs forward passes.
        student: A smaller zoo model with the same outputs (e.g. a narrow ``ConvNet``).
        train: Labelled training data, or a catalog name (its training split).
        temperature: Softening of the logits (see :class:`DistillationLoss`).
        alpha: Weight of the teacher's soft targets; ``1 - alpha`` that of the labels.
        epochs, batch_size, lr, seed, device: As :func:`lepton.fit` takes them (a
            PyTorch teacher moves to the student's device).
        val: Validation data for :func:`lepton.fit` (metrics with the plain loss).
        test: Labelled data (or a catalog name: its test split) for the accuracy of the
            teacher (before) and the student (after).
        register: ``None``: register the student as a new version of the teacher's model
            when the teacher came from the registry; a name: under it; ``False``: never.
        database: The metadata database of the registry.
        quiet: No progress output from ``fit``.

    Returns:
        A :class:`Compressed` with the trained student and its report (teacher vs
        student sizes, parameters and accuracy; ``details["fit"]``: the training history).

    Raises:
        CompressionError: A bad temperature or alpha, or a student whose outputs do not
            have the teacher's shape.

    Example:
        >>> small = lp.models.ConvNet(num_classes=10, num_filters=[8, 16])  # doctest: +SKIP
        >>> student, report = lp.compress.distill("mnist-convnet@production", small,
        ...                                       "mnist", epochs=2, test="mnist")  # doctest: +SKIP
    """
    started = time.perf_counter()
    if not isinstance(student, nn.Module):
        raise CompressionError(
            f"student must be an nn.Module (e.g. lp.models.ConvNet(num_classes=10, "
            f"num_filters=[8, 16])), not {type(student).__name__}"
        )
    source = open_source(teacher, database=database)
    hook = DistillationLoss(source.model, temperature, alpha)
    train_ds = dataset(train, "train")
    check_inputs(source.model, train_ds, "training")
    with torch.no_grad():
        x = train_ds.features[:2].float()
        shapes = tuple(source.model(x).shape), tuple(student.eval()(x).shape)
    if shapes[0] != shapes[1]:
        raise CompressionError(
            f"the student outputs shape {list(shapes[1])} per 2 inputs and the teacher "
            f"{list(shapes[0])}; build the student with the teacher's number of classes"
        )
    val_ds = dataset(val, "test") if val is not None else None
    dev = resolve_device(device)
    source.model.to(dev)  # no-op for an ONNX teacher, which has no parameters
    result = fit(student, train_ds, val_ds, epochs=epochs, batch_size=batch_size, lr=lr,
                 seed=seed, loss=hook, device=dev, quiet=quiet)  # fmt: skip
    student.eval().cpu()
    source.model.cpu()
    test_ds = dataset(test, "test") if test is not None else None
    acc_before = test_accuracy(source.model, test_ds)
    acc_after = test_accuracy(student, test_ds)
    recipe: dict[str, Any] = {
        "step": "distill", "temperature": hook.temperature, "alpha": hook.alpha,
        "train": train_ds.name, "train_rows": len(train_ds), "epochs": epochs,
        "batch_size": batch_size, "lr": lr, "seed": seed,
    }  # fmt: skip
    metrics = {"accuracy": acc_after} if acc_after is not None else {}
    registered = publish(
        student, source=source, register=register, step="distill", recipe=recipe,
        metrics=metrics, data=train_ds, database=database,
        measured=figures(test_ds, acc_before, acc_after),
    )  # fmt: skip
    size_before = len(source.onnx) if source.onnx is not None else stored_size(source.model)
    report = CompressReport(
        step="distill", recipe=recipe, kind="pytorch", source=source.ref,
        size_before=size_before, size_after=stored_size(student),
        parameters_before=parameter_count(source.model),
        parameters_after=parameter_count(student), accuracy_before=acc_before,
        accuracy_after=acc_after, registered=registered,
        seconds=time.perf_counter() - started,
        details={"loss_calls": hook.calls, "fit": result.to_dict()},
    )  # fmt: skip
    return Compressed(model=student, report=report)
