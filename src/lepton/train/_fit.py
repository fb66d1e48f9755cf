"""``fit``: the training loop, kept lean so it runs as fast as a hand-written one."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lepton._context import active_run
from lepton.config import get_settings
from lepton.data import Dataset
from lepton.errors import (
    CheckpointError,
    DivergedError,
    LeptonError,
    ShapeError,
    TrainingError,
)
from lepton.train._callbacks import Callback, EarlyStopping, EpochRecord, RunLogger, TrainState
from lepton.train._checkpoint import load_checkpoint, save_checkpoint
from lepton.train._metrics import as_dataset, evaluate, loss_function, to_float_batch
from lepton.train._optim import (
    Scheduler,
    make_optimizer,
    make_scheduler,
    scheduler_state,
    steps_per_batch,
)
from lepton.train._progress import Reporter

__all__ = ["FitResult", "LossHook", "fit", "resolve_device"]

#: ``loss(outputs, targets, inputs) -> scalar tensor``: replaces the default loss of
#: :func:`fit` (e.g. knowledge distillation, which also needs the inputs).
LossHook = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class FitResult:
    """What :func:`fit` returns.

    Attributes:
        history: One record per epoch (train and validation metrics, learning rate, time).
        metrics: Metrics of the weights the model holds now (validation metrics when
            ``val`` was given, else training metrics): pass these to the registry.
        best_epoch: The epoch with the best monitored value.
        monitor: The monitored metric, e.g. ``"val_loss"``.
        seconds: Wall time of the whole call.
        samples_per_second: Training throughput (validation excluded).
        stopped_early: Whether early stopping ended the run.
        checkpoint: The last checkpoint folder, when ``checkpoint_dir`` was set.
    """

    history: list[EpochRecord]
    metrics: dict[str, float]
    best_epoch: int
    monitor: str
    seconds: float
    samples_per_second: float
    stopped_early: bool = False
    checkpoint: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def best(self) -> dict[str, float]:
        """Metrics of the best epoch by ``monitor`` (validation metrics when available)."""
        record = self.history[self.best_epoch - 1] if self.best_epoch else self.history[-1]
        return dict(record.val or record.train)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form."""
        return {
            "best": self.best,
            "history": [r.to_dict() for r in self.history],
            "metrics": self.metrics,
            "best_epoch": self.best_epoch,
            "monitor": self.monitor,
            "seconds": self.seconds,
            "samples_per_second": self.samples_per_second,
            "stopped_early": self.stopped_early,
            "checkpoint": str(self.checkpoint) if self.checkpoint else None,
        }


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` picks CUDA when present, else the CPU."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise TrainingError(f"unknown device {device!r}; use 'auto', 'cpu' or 'cuda'") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise TrainingError("device='cuda' but no CUDA GPU is visible; use device='auto'")
    return dev


def _validate(epochs: int, batch_size: int, lr: float, grad_clip: float | None) -> None:
    if epochs < 1:
        raise TrainingError(f"epochs must be >= 1, got {epochs}")
    if batch_size < 1:
        raise TrainingError(f"batch_size must be >= 1, got {batch_size}")
    if not lr > 0:
        raise TrainingError(f"lr must be > 0, got {lr}; e.g. lr=1e-3")
    if grad_clip is not None and not grad_clip > 0:
        raise TrainingError(f"grad_clip must be > 0 or None, got {grad_clip}")


def _check_compatible(model: nn.Module, ds: Dataset, dev: torch.device) -> None:
    """One tiny forward pass so shape mistakes surface as a clear error, not deep in torch."""
    if ds.targets is None:
        loss_function(None)
    x = to_float_batch(ds.features[:2], dev)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(x)
    except ShapeError as exc:
        raise ShapeError(f"{exc.message} Dataset {ds.name!r} gives {_input_text(ds)}.") from None
    except LeptonError:
        raise
    except (RuntimeError, ValueError, IndexError) as exc:
        raise ShapeError(
            f"{type(model).__name__} cannot take the inputs of dataset {ds.name!r}, "
            f"{_input_text(ds)} ({str(exc).splitlines()[0]}); build the model for this "
            f"input shape (e.g. MLP(in_features={ds.features[0].numel()}, ...))"
        ) from None
    finally:
        model.train(was_training)
    if ds.task == "classification":
        assert ds.targets is not None
        classes = int(ds.targets.max()) + 1
        if out.dim() != 2 or out.shape[1] < classes:
            raise ShapeError(
                f"{type(model).__name__} outputs shape {tuple(out.shape)} but dataset "
                f"{ds.name!r} has labels up to {classes - 1}; build it with num_classes="
                f"{ds.num_classes or classes}"
            )
    elif ds.targets is not None and out.numel() != ds.targets[:2].numel():
        raise ShapeError(
            f"{type(model).__name__} outputs shape {tuple(out.shape)} per 2 samples but the "
            f"regression targets have shape {tuple(ds.targets[:2].shape)}; set out_features "
            f"to the number of targets"
        )


def _input_text(ds: Dataset) -> str:
    return f"inputs of shape {ds.input_shape} ({ds.features[0].numel()} values)"


@contextlib.contextmanager
def _threads(num_threads: int | None) -> Iterator[None]:
    if not num_threads:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _best_is(monitor: str, value: float, best: float | None) -> bool:
    if best is None:
        return True
    higher = monitor.endswith(("accuracy", "precision", "recall", "f1", "auc", "r2"))
    return value > best if higher else value < best


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
    seed: int = 0,
    device: str | torch.device = "auto",
    amp: bool = False,
    callbacks: Sequence[Callback] = (),
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    num_threads: int | None = None,
    quiet: bool = False,
    log_every: int = 20,
) -> FitResult:
    """Train ``model`` on ``train``; the model is updated in place.

    Args:
        model: Any ``nn.Module`` (e.g. from :mod:`lepton.models`).
        train: Training data: a :class:`~lepton.data.Dataset` or an ``(x, y)`` pair.
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

    Returns:
        A :class:`FitResult` with the per-epoch history and final metrics.

    Raises:
        ShapeError: The model cannot take the data's inputs or has too few outputs.
        LabelError: The data has no targets.
        DivergedError: The loss became NaN or infinite.
        CheckpointError: ``checkpoint_dir`` holds a checkpoint and ``resume`` is False,
            or the checkpoint belongs to another model or data.

    Example:
        >>> train = lp.data.load("mnist", split="train")  # doctest: +SKIP
        >>> model = lp.models.ConvNet(num_classes=10)  # doctest: +SKIP
        >>> result = lp.fit(model, train, epochs=3, batch_size=64)  # doctest: +SKIP
    """
    started = time.perf_counter()
    _validate(epochs, batch_size, lr, grad_clip)
    train_ds = as_dataset(train, what="train")
    val_ds = as_dataset(val, what="val") if val is not None else None
    dev = resolve_device(device)
    if amp and dev.type != "cuda":
        raise TrainingError("amp=True needs a CUDA device; leave amp=False on the CPU")
    model.to(dev)
    _check_compatible(model, train_ds, dev)
    callbacks = list(callbacks)
    run = active_run()  # set by lp.start_run
    if run is not None:
        settings = {"epochs": epochs, "batch_size": batch_size, "optimizer": optimizer, "lr": lr,
                    "weight_decay": weight_decay, "schedule": schedule, "seed": seed,
                    "grad_clip": grad_clip, "device": str(dev)}  # fmt: skip
        datasets = {"train": train_ds, **({"val": val_ds} if val_ds is not None else {})}
        callbacks.append(RunLogger(run, settings, datasets))
    loop = _Loop(
        model=model,
        train=train_ds,
        val=val_ds,
        dev=dev,
        epochs=epochs,
        batch_size=batch_size,
        optimizer=make_optimizer(
            optimizer, model.parameters(), lr=lr, weight_decay=weight_decay, momentum=momentum
        ),
        schedule=schedule,
        lr=lr,
        grad_clip=grad_clip,
        loss_hook=loss,
        amp=amp,
        seed=seed,
        callbacks=callbacks,
        early_stopping=early_stopping,
        checkpoint_dir=Path(checkpoint_dir) if checkpoint_dir is not None else None,
        log_every=max(1, log_every),
        reporter=Reporter(quiet=quiet, name=f"{type(model).__name__} on {train_ds.name}"),
    )
    if num_threads is None:
        num_threads = get_settings().num_threads or None
    with _threads(num_threads):
        result = loop.run(resume=resume)
    result.seconds = time.perf_counter() - started
    return result


class _Loop:
    """The state and steps of one ``fit`` call (private: ``fit`` is the API)."""

    def __init__(
        self,
        *,
        model: nn.Module,
        train: Dataset,
        val: Dataset | None,
        dev: torch.device,
        epochs: int,
        batch_size: int,
        optimizer: torch.optim.Optimizer,
        schedule: str | None,
        lr: float,
        grad_clip: float | None,
        loss_hook: LossHook | None,
        amp: bool,
        seed: int,
        callbacks: list[Callback],
        early_stopping: int | EarlyStopping | None,
        checkpoint_dir: Path | None,
        log_every: int,
        reporter: Reporter,
    ) -> None:
        self.model, self.train, self.val, self.dev = model, train, val, dev
        self.epochs, self.batch_size, self.seed = epochs, batch_size, seed
        self.optimizer, self.grad_clip, self.log_every = optimizer, grad_clip, log_every
        self.steps = len(train) // batch_size + (1 if len(train) % batch_size else 0)
        self.scheduler: Scheduler | None = make_scheduler(
            schedule, optimizer, epochs=epochs, steps_per_epoch=self.steps, lr=lr
        )
        self.batch_schedule = steps_per_batch(schedule)
        self.criterion = loss_function(train.task)
        self.loss_hook = loss_hook
        self.classify = train.task == "classification"
        if isinstance(early_stopping, int):
            early_stopping = EarlyStopping(
                patience=early_stopping, monitor="val_loss" if val is not None else "train_loss"
            )
        self.stopper = early_stopping
        self.callbacks = callbacks + ([early_stopping] if early_stopping is not None else [])
        self.monitor = (
            early_stopping.monitor
            if early_stopping is not None
            else ("val_loss" if val is not None else "train_loss")
        )
        self.checkpoint_dir = checkpoint_dir
        self.reporter = reporter
        self.amp_dtype = (
            torch.bfloat16
            if dev.type == "cuda" and torch.cuda.is_bf16_supported()
            else torch.float16
        )
        self.amp = amp
        self.scaler = torch.amp.GradScaler("cuda", enabled=amp and self.amp_dtype == torch.float16)
        self.generator = torch.Generator().manual_seed(seed)
        self.state = TrainState(model=model, optimizer=optimizer, epochs=epochs)
        self.best: float | None = None
        self.best_epoch = 0
        self.train_seconds = 0.0
        self.trained_samples = 0
        self.last_checkpoint: Path | None = None

    # -- resume -----------------------------------------------------------------------
    def _fit_signature(self) -> dict[str, Any]:
        return {"batch_size": self.batch_size, "num_samples": len(self.train), "seed": self.seed}

    def _restore(self, resume: bool) -> None:
        if self.checkpoint_dir is None:
            if resume:
                raise CheckpointError("resume=True needs checkpoint_dir= (where to resume from)")
            return
        ckpt = load_checkpoint(self.checkpoint_dir)
        if ckpt is None:
            return
        if not resume:
            raise CheckpointError(
                f"{self.checkpoint_dir} already holds a checkpoint (epoch {ckpt.epoch}); pass "
                f"resume=True to continue it, or choose an empty checkpoint_dir"
            )
        saved = ckpt.state.get("fit", {})
        if saved != self._fit_signature():
            raise CheckpointError(
                f"checkpoint {ckpt.path} was written with {saved}, this call has "
                f"{self._fit_signature()}; resume with the same data, batch_size and seed"
            )
        ckpt.restore_model(self.model)
        ckpt.restore_optimizer(self.optimizer)
        if self.scheduler is not None and ckpt.state.get("scheduler"):
            self.scheduler.load_state_dict(ckpt.state["scheduler"])
        torch.set_rng_state(ckpt.trainer["rng.torch"])
        self.generator.set_state(ckpt.trainer["rng.generator"])
        if self.dev.type == "cuda":
            cuda_states = ckpt.tensors("rng.cuda")
            torch.cuda.set_rng_state_all([cuda_states[k] for k in sorted(cuda_states)])
        saved_callbacks = ckpt.state["callbacks"]
        for key, cb in self._callback_keys():
            if key in saved_callbacks:
                cb.load_state_dict(saved_callbacks[key])
                cb.load_state_tensors(ckpt.tensors(f"callback.{key}"))
        self.state.history = [EpochRecord.from_dict(r) for r in ckpt.state["history"]]
        self.state.epoch = ckpt.epoch
        self.state.step = int(ckpt.state["step"])
        self.best, self.best_epoch = ckpt.state["best"], int(ckpt.state["best_epoch"])
        self.last_checkpoint = ckpt.path

    def _callback_keys(self) -> list[tuple[str, Callback]]:
        """Stable names for callbacks' checkpoint state: class name + occurrence."""
        counts: dict[str, int] = {}
        keys = []
        for cb in self.callbacks:
            name = type(cb).__name__
            counts[name] = counts.get(name, 0) + 1
            keys.append((f"{name}-{counts[name]}", cb))
        return keys

    def _save(self) -> None:
        if self.checkpoint_dir is None:
            return
        extra = {"rng.torch": torch.get_rng_state(), "rng.generator": self.generator.get_state()}
        if self.dev.type == "cuda":
            for i, st in enumerate(torch.cuda.get_rng_state_all()):
                extra[f"rng.cuda.{i:03d}"] = st
        for key, cb in self._callback_keys():
            extra.update({f"callback.{key}.{k}": v for k, v in cb.state_tensors().items()})
        state = {
            "epoch": self.state.epoch,
            "step": self.state.step,
            "history": [r.to_dict() for r in self.state.history],
            "scheduler": scheduler_state(self.scheduler),
            "callbacks": {key: cb.state_dict() for key, cb in self._callback_keys()},
            "best": self.best,
            "best_epoch": self.best_epoch,
            "fit": self._fit_signature(),
        }
        self.last_checkpoint = save_checkpoint(
            self.checkpoint_dir,
            state=state,
            model=self.model,
            optimizer=self.optimizer,
            extra_tensors=extra,
        )

    # -- the loop -----------------------------------------------------------------------
    def run(self, *, resume: bool) -> FitResult:
        torch.manual_seed(self.seed)
        if self.dev.type == "cuda":
            torch.cuda.manual_seed_all(self.seed)
        self._restore(resume)
        self.reporter.start(self.epochs, self.steps, resumed_from=self.state.epoch)
        try:
            for cb in self.callbacks:
                cb.on_fit_start(self.state)
            while self.state.epoch < self.epochs and not self.state.should_stop:
                self.state.epoch += 1
                self._epoch()
            for cb in self.callbacks:
                cb.on_fit_end(self.state)
        finally:
            self.reporter.close()
        return self._result()

    def _epoch(self) -> None:
        state, epoch_start = self.state, time.perf_counter()
        self.model.train()
        for cb in self.callbacks:
            cb.on_epoch_start(state)
        self.reporter.start_epoch(state.epoch, self.epochs, self.steps)
        loss_sum = torch.zeros((), device=self.dev)
        correct = torch.zeros((), dtype=torch.int64, device=self.dev)
        seen = 0
        batches = self.train.batches(self.batch_size, shuffle=True, generator=self.generator)
        for step, (xb, yb) in enumerate(batches, 1):
            assert yb is not None
            out, loss, y = self._step(xb, yb)
            n = y.shape[0]
            loss_sum += loss.detach() * n
            if self.classify:
                correct += (out.argmax(dim=1) == y).sum()
            seen += n
            state.step += 1
            if step % self.log_every == 0:
                state.batch_loss = self._finite(float(loss.detach()), step)
                self.reporter.update(step, state.batch_loss)
            for cb in self.callbacks:
                cb.on_batch_end(state)
        train_time = time.perf_counter() - epoch_start
        self.train_seconds += train_time
        self.trained_samples += seen
        train_metrics = {"loss": self._finite(float(loss_sum) / seen, self.steps)}
        if self.classify:
            train_metrics["accuracy"] = int(correct) / seen
        val_metrics = evaluate(self.model, self.val, device=self.dev) if self.val else {}
        self._epoch_end(train_metrics, val_metrics, time.perf_counter() - epoch_start)

    def _step(
        self, xb: torch.Tensor, yb: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = to_float_batch(xb, self.dev)
        y = yb.to(self.dev, non_blocking=True)
        with torch.autocast(self.dev.type, dtype=self.amp_dtype, enabled=self.amp):
            out = self.model(x)
            if not self.classify:
                out = out.reshape(y.shape)
            hook = self.loss_hook
            loss = self.criterion(out, y) if hook is None else hook(out, y, x)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.grad_clip is not None:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.batch_schedule:
            assert self.scheduler is not None
            self.scheduler.step()
        return out, loss, y

    def _finite(self, value: float, step: int) -> float:
        if not math.isfinite(value):
            lr = self.optimizer.param_groups[0]["lr"]
            raise DivergedError(
                f"the loss became {value} in epoch {self.state.epoch} (step {step}); lower the "
                f"learning rate (now {lr:g}), set grad_clip=1.0, or standardize the features "
                f"(dataset.standardize()); check the data for NaN with lp.data.clean"
            )
        return value

    def _epoch_end(
        self, train_metrics: dict[str, float], val_metrics: dict[str, float], seconds: float
    ) -> None:
        state = self.state
        record = EpochRecord(
            epoch=state.epoch,
            train=train_metrics,
            val=val_metrics,
            lr=float(self.optimizer.param_groups[0]["lr"]),
            seconds=seconds,
        )
        state.history.append(record)
        value = record.get(self.monitor)
        if value is not None and _best_is(self.monitor, value, self.best):
            self.best, self.best_epoch = value, state.epoch
        if self.scheduler is not None and not self.batch_schedule:
            if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                self.scheduler.step(value if value is not None else train_metrics["loss"])
            else:
                self.scheduler.step()
        for cb in self.callbacks:
            cb.on_epoch_end(state)
        self.reporter.end_epoch(record, self.epochs)
        self._save()

    def _result(self) -> FitResult:
        history = self.state.history
        final_epoch = len(history)
        if self.stopper is not None and self.stopper.restore_best and self.stopper.best_epoch:
            final_epoch = self.stopper.best_epoch  # its weights were loaded back
        final = history[final_epoch - 1]
        return FitResult(
            history=list(history),
            metrics=dict(final.val or final.train),
            best_epoch=self.best_epoch,
            monitor=self.monitor,
            seconds=0.0,
            samples_per_second=self.trained_samples / self.train_seconds
            if self.train_seconds
            else 0.0,
            stopped_early=self.state.should_stop,
            checkpoint=self.last_checkpoint,
        )
