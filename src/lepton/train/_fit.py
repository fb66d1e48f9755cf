"""``fit``: the training loop, kept lean so it runs as fast as a hand-written one.

This module is the entry point: it checks the arguments (:mod:`lepton.train._setup`),
builds the optimizer, lets a private-training method wrap the model, optimizer and data
when ``privacy=`` is given (:mod:`lepton.train._private`), and runs the epochs
(:mod:`lepton.train._loop`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lepton._context import active_run
from lepton.config import get_settings
from lepton.data import Dataset
from lepton.errors import DistributedError, PrivateTrainingError, TrainingError
from lepton.train._callbacks import Callback, EarlyStopping, RunLogger
from lepton.train._distributed import is_launched, join, record_failure
from lepton.train._loop import Loop
from lepton.train._metrics import as_dataset
from lepton.train._optim import make_optimizer
from lepton.train._private import PrivateTraining, TrainingPrivacy
from lepton.train._progress import Reporter
from lepton.train._result import BatchTransform, FitResult, LossHook
from lepton.train._setup import check_arguments, check_compatible, resolve_device, threads
from lepton.train._spawn import spawn_fit

__all__ = ["FitResult", "LossHook", "TrainingPrivacy", "fit", "resolve_device"]


def fit(
    model: nn.Module,
    train: Dataset | tuple[Any, Any],
    val: Dataset | tuple[Any, Any] | None = None,
    *,
    epochs: int = 10,
    batch_size: int = 32,
    optimizer: str = "adamw",
    lr: float = 1e-3,
    weight_decay: float | None = None,
    momentum: float = 0.9,
    schedule: str | None = None,
    early_stopping: int | EarlyStopping | None = None,
    grad_clip: float | None = None,
    loss: LossHook | None = None,
    batch_transform: BatchTransform | None = None,
    seed: int = 0,
    device: str | torch.device = "auto",
    amp: bool = False,
    callbacks: Sequence[Callback] = (),
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    num_threads: int | None = None,
    quiet: bool = False,
    log_every: int = 20,
    privacy: TrainingPrivacy | None = None,
    workers: int | None = None,
    per_worker_batch: bool = False,
    sync_batchnorm: bool = True,
) -> FitResult:
    """Train ``model`` on ``train``; the model is updated in place.

    Args:
        model: Any ``nn.Module`` (e.g. from :mod:`lepton.models`).
        train: Training data: a :class:`~lepton.data.Dataset` or an ``(x, y)`` pair.
            Classification targets may be one label per position of ``(N, T)`` token
            ids (a language model's next tokens, ``lp.text.LanguageModelData``): the
            model then outputs ``(N, T, K)`` logits and the loss and accuracy are over
            every position.
        val: Optional validation data, evaluated after every epoch.
        epochs: Passes over ``train``.
        batch_size: Samples per optimizer step.
        optimizer: ``"adamw"``, ``"adam"``, ``"sgd"``, ``"adagrad"`` or ``"rmsprop"``.
        lr: Learning rate (the peak rate for ``schedule="onecycle"``).
        weight_decay: L2 / decoupled weight decay; ``None``: 0.01 for AdamW, else 0.
        momentum: Momentum for SGD and RMSprop.
        schedule: ``None``, ``"cosine"``, ``"onecycle"``, ``"step"`` or ``"plateau"``.
        early_stopping: Patience in epochs, or an :class:`EarlyStopping` object.
        grad_clip: Clip the global gradient norm to this value.
        loss: Replaces the default training loss (cross-entropy for classification, MSE
            for regression): called as ``loss(outputs, targets, inputs)`` on every batch
            (``outputs`` reshaped like ``targets`` for regression), it returns the scalar
            to minimise. Validation metrics and ``val_loss`` keep the default loss. E.g.
            :func:`lepton.compress.distill` passes a teacher's soft targets this way.
        batch_transform: Called as ``batch_transform(inputs, targets)`` on every training
            batch (on the device, before the forward pass) and returns the pair to train
            on: batch-level augmentation such as mixup or cutmix
            (``lp.vision.RandomMix(num_classes=10)``, or torchvision's ``v2.MixUp``), whose
            targets may be ``(N, K)`` class probabilities (cross-entropy takes them;
            training accuracy is then against their argmax). Validation is untouched.
        seed: Seeds shuffling, dropout and any other randomness of the loop.
        device: ``"auto"`` (CUDA if present), ``"cpu"`` or ``"cuda"``.
        amp: Mixed precision (bfloat16/float16 autocast) on CUDA.
        callbacks: :class:`Callback` objects called at each stage.
        checkpoint_dir: Write a checkpoint after every epoch here.
        resume: Continue from the newest checkpoint in ``checkpoint_dir`` (exactly: the
            result equals an uninterrupted run with the same seed).
        num_threads: Torch CPU threads during the call (default: ``LEPTON_NUM_THREADS``,
            else unchanged).
        quiet: Print nothing.
        log_every: Steps between progress-bar updates (and NaN checks).
        privacy: Train with differential privacy, e.g.
            ``lp.privacy.DPSGD(epsilon=3, delta=1e-5, max_grad_norm=1.0)``: per-sample
            gradient clipping, Gaussian noise and Poisson-sampled batches of expected size
            ``batch_size`` (Opacus); the whole run is charged to the dataset's privacy
            budget before the first step, and ``FitResult.privacy`` records the guarantee.
            BatchNorm layers are replaced by GroupNorm in place (with a warning). Not
            combinable with ``amp``, ``grad_clip`` or checkpoints.
        workers: Train data-parallel in this many processes on this machine
            (``torch.distributed``: gloo on the CPU, NCCL with one GPU per process):
            gradients are averaged over the workers after every step, and the caller's
            model receives the trained weights, as with one process. Every worker sees the
            same global batches one process would, so the weights match ``workers=1`` (up
            to float rounding; dropout is drawn per worker). The model, the data, the
            callbacks and ``loss`` are sent to the workers, so they must be picklable
            (defined at a module's top level; a script's call must sit under ``if
            __name__ == "__main__":``). Callbacks run in every worker
            (``torch.distributed.get_rank()`` tells which); one whose class sets
            ``in_caller = True`` runs in the calling process instead, on each epoch's
            record. Progress, tracking and checkpoints come from rank 0 only. Under
            ``torchrun`` / ``lepton launch`` the process joins the launched job instead
            (``workers`` may be left unset).
        per_worker_batch: ``batch_size`` is each worker's batch (the global batch is
            ``batch_size * workers``) instead of the global batch, which must then split
            evenly over the workers. ``FitResult.extra["distributed"]`` records the split.
        sync_batchnorm: With ``workers``: BatchNorm layers normalise over the global batch
            (one all-reduce per layer and step, forward and backward), so the result
            matches one process; ``False`` normalises each worker's part on its own (no
            communication, as Lightning and plain DDP do by default): faster, but the
            weights then depend on the number of workers.

    Returns:
        A :class:`FitResult` with the per-epoch history and final metrics.

    Raises:
        ShapeError: The model cannot take the data's inputs or has too few outputs.
        LabelError: The data has no targets.
        DivergedError: The loss became NaN or infinite.
        CheckpointError: ``checkpoint_dir`` holds a checkpoint and ``resume`` is False,
            or the checkpoint belongs to another model or data.
        PrivateTrainingError: ``privacy`` with an option it cannot honour, or a model
            it cannot train privately.
        BudgetExceededError: ``privacy`` charges a dataset whose budget cannot pay for
            the run; nothing was trained.
        DistributedError: ``workers`` cannot be honoured (a batch that does not split,
            a worker count unlike the launcher's, something that cannot be pickled);
            ``WorkerFailedError`` when a worker fails (its error is re-raised as is when it
            is a Lepton error), ``RendezvousError`` / ``PortInUseError`` when the workers
            cannot meet.

    Example:
        >>> train = lp.data.load("mnist", split="train")  # doctest: +SKIP
        >>> model = lp.models.ConvNet(num_classes=10)  # doctest: +SKIP
        >>> result = lp.fit(model, train, epochs=3, batch_size=64)  # doctest: +SKIP
    """
    started = time.perf_counter()
    check_arguments(epochs, batch_size, lr, grad_clip)
    if workers is not None and workers < 1:
        raise DistributedError(f"workers must be >= 1, got {workers}")
    launched = is_launched()
    parallel = launched or (workers or 1) > 1
    if privacy is not None:
        _check_private(privacy, amp=amp, grad_clip=grad_clip, checkpoint_dir=checkpoint_dir)
        if parallel:
            raise PrivateTrainingError(
                "privacy= trains in one process (the accountant needs every step's sampling); "
                "leave workers unset and do not launch it with torchrun"
            )
    train_ds = as_dataset(train, what="train")
    val_ds = as_dataset(val, what="val") if val is not None else None
    shard = (
        join(
            workers,
            batch_size=batch_size,
            per_worker_batch=per_worker_batch,
            device=device,
            sync_batchnorm=sync_batchnorm,
        )
        if launched
        else None
    )
    dev = shard.device if shard is not None else resolve_device(device)
    if amp and dev.type != "cuda":
        raise TrainingError("amp=True needs a CUDA device; leave amp=False on the CPU")
    here = torch.device("cpu") if parallel and shard is None else dev  # the workers move it
    model.to(here)
    if privacy is not None:
        model = privacy.prepare(model)
    check_compatible(model, train_ds, here)
    callbacks = list(callbacks)
    run = active_run() if shard is None or shard.is_main else None  # set by lp.start_run
    logger: RunLogger | None = None
    if run is not None:
        settings = {"epochs": epochs, "batch_size": batch_size, "optimizer": optimizer, "lr": lr,
                    "weight_decay": weight_decay, "schedule": schedule, "seed": seed,
                    "grad_clip": grad_clip, "device": str(dev)}  # fmt: skip
        if privacy is not None:
            settings["privacy"] = type(privacy).__name__
        if parallel:
            settings["workers"] = shard.world if shard else workers
            settings["per_worker_batch"] = per_worker_batch
            settings["sync_batchnorm"] = sync_batchnorm
        datasets = {"train": train_ds, **({"val": val_ds} if val_ds is not None else {})}
        logger = RunLogger(run, settings, datasets)
    name = f"{type(model).__name__} on {train_ds.name}"
    if parallel and shard is None:  # fit(workers=N) here: start the workers
        assert workers is not None
        in_caller = [cb for cb in callbacks if getattr(cb, "in_caller", False)]
        options = {"epochs": epochs, "batch_size": batch_size, "optimizer": optimizer, "lr": lr,
                   "weight_decay": weight_decay, "momentum": momentum, "schedule": schedule,
                   "early_stopping": early_stopping, "grad_clip": grad_clip, "loss": loss,
                   "batch_transform": batch_transform,
                   "seed": seed, "device": device, "amp": amp, "checkpoint_dir": checkpoint_dir,
                   "callbacks": [cb for cb in callbacks if cb not in in_caller], "resume": resume,
                   "num_threads": num_threads, "quiet": quiet, "log_every": log_every,
                   "per_worker_batch": per_worker_batch,
                   "sync_batchnorm": sync_batchnorm}  # fmt: skip
        return spawn_fit(
            model, train_ds, val_ds, workers=workers, options=options, name=name, device=dev,
            caller_callbacks=in_caller + ([logger] if logger is not None else []),
            fit=fit,
        )  # fmt: skip
    if logger is not None:
        callbacks.append(logger)
    opt = make_optimizer(
        optimizer, model.parameters(), lr=lr, weight_decay=weight_decay, momentum=momentum
    )
    private: PrivateTraining | None = None
    if privacy is not None:  # charges the budget: refused -> nothing trained
        private = privacy.attach(model, opt, train_ds, epochs=epochs, batch_size=batch_size)
    try:
        loop = Loop(
            model=private.model if private else model,
            train=train_ds,
            val=val_ds,
            dev=dev,
            epochs=epochs,
            batch_size=shard.batch if shard else batch_size,
            optimizer=private.optimizer if private else opt,
            schedule=schedule,
            lr=lr,
            grad_clip=grad_clip,
            loss_hook=loss,
            batch_transform=batch_transform,
            amp=amp,
            seed=seed,
            callbacks=callbacks,
            early_stopping=early_stopping,
            checkpoint_dir=Path(checkpoint_dir) if checkpoint_dir is not None else None,
            log_every=max(1, log_every),
            reporter=shard.reporter(quiet=quiet, name=name)
            if shard
            else Reporter(quiet=quiet, name=name),
            batches=private.batches if private else None,
            steps_per_epoch=private.steps_per_epoch if private else None,
            shard=shard,
        )
        if num_threads is None:
            num_threads = get_settings().num_threads or None
        with threads(num_threads):
            result = loop.run(resume=resume)
        if shard is not None:
            result.extra["distributed"] = shard.describe()
    except BaseException as exc:
        if shard is not None:
            record_failure(exc)
        raise
    finally:
        if privacy is not None and private is not None:
            privacy.detach()
        if shard is not None:
            shard.close()
    if privacy is not None:
        result.privacy = privacy.report()
    result.seconds = time.perf_counter() - started
    return result


def _check_private(
    privacy: TrainingPrivacy,
    *,
    amp: bool,
    grad_clip: float | None,
    checkpoint_dir: str | Path | None,
) -> None:
    """Refuse the options a private run cannot honour, before any work."""
    missing = [m for m in ("prepare", "attach", "detach", "report") if not hasattr(privacy, m)]
    if missing:
        raise PrivateTrainingError(
            f"privacy= takes a private-training method such as lp.privacy.DPSGD(epsilon=3, "
            f"delta=1e-5); {type(privacy).__name__} has no {', '.join(missing)}"
        )
    if amp:
        raise PrivateTrainingError(
            "privacy= cannot be combined with amp=True: per-sample gradients are clipped "
            "in float32 and the loss scaler would rescale them after clipping; leave amp=False"
        )
    if grad_clip is not None:
        raise PrivateTrainingError(
            "privacy= clips every sample's gradient itself (DPSGD(max_grad_norm=...)); a "
            "global grad_clip on top would change the noise calibration: leave grad_clip=None"
        )
    if checkpoint_dir is not None:
        raise PrivateTrainingError(
            "privacy= cannot write or resume checkpoints: the accountant's state is not "
            "saved, so a resumed run would spend budget the ledger does not know about; "
            "leave checkpoint_dir=None"
        )
