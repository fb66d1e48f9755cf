"""The epoch loop of ``fit``: steps, per-epoch bookkeeping, checkpoints and resume.

``fit`` (:mod:`lepton.train._fit`) settles the arguments, the device and the optimizer,
then hands one :class:`Loop` everything; the loop owns the state of the run until it
returns a :class:`~lepton.train._result.FitResult`. A private run (``fit(privacy=...)``)
gives it its own batches (Poisson-sampled) and an optimizer that clips and noises; the
steps themselves are the same.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lepton.data import Dataset
from lepton.errors import CheckpointError, DivergedError
from lepton.train._callbacks import Callback, EarlyStopping, EpochRecord, TrainState
from lepton.train._checkpoint import load_checkpoint, save_checkpoint
from lepton.train._distributed import Shard
from lepton.train._metrics import evaluate, loss_function, to_float_batch
from lepton.train._optim import Scheduler, make_scheduler, scheduler_state, steps_per_batch
from lepton.train._private import Batches
from lepton.train._progress import Reporter
from lepton.train._result import BatchTransform, FitResult, LossHook
from lepton.train._setup import best_is

__all__ = ["Loop"]


class Loop:
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
        batch_transform: BatchTransform | None = None,
        seed: int,
        callbacks: list[Callback],
        early_stopping: int | EarlyStopping | None,
        checkpoint_dir: Path | None,
        log_every: int,
        reporter: Reporter,
        batches: Batches | None = None,
        steps_per_epoch: int | None = None,
        shard: Shard | None = None,
    ) -> None:
        self.model, self.train, self.val, self.dev = model, train, val, dev
        self.shard = shard  # one rank of a data-parallel run; batch_size is the global batch
        self.net = shard.wrap(model) if shard is not None else model  # what the steps call
        self.epochs, self.batch_size, self.seed = epochs, batch_size, seed
        self.optimizer, self.grad_clip, self.log_every = optimizer, grad_clip, log_every
        self.steps = steps_per_epoch or (
            len(train) // batch_size + (1 if len(train) % batch_size else 0)
        )
        self.private_batches = batches  # a private run's sampler (fit's privacy=)
        self.scheduler: Scheduler | None = make_scheduler(
            schedule, optimizer, epochs=epochs, steps_per_epoch=self.steps, lr=lr
        )
        self.batch_schedule = steps_per_batch(schedule)
        self.criterion = loss_function(train.task)
        self.loss_hook = loss_hook
        self.batch_transform = batch_transform  # fit's batch_transform= (mixup, cutmix)
        self.classify = train.task == "classification"
        # one label per position ((B, T) targets, (B, T, K) logits): accuracy over positions
        targets = train.targets
        self.positions = (
            int(targets.shape[1])
            if self.classify and targets is not None and targets.dim() == 2
            else 0
        )
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
        if self.checkpoint_dir is None or (self.shard is not None and not self.shard.is_main):
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
        for step, (xb, yb, scale) in enumerate(self._batches(), 1):
            assert yb is not None
            out, loss, y = self._step(xb, yb, scale)
            n = y.shape[0]
            if n == 0:  # Poisson sampling can draw an empty batch: its step adds only noise
                state.step += 1
                continue
            loss_sum += loss.detach() * n
            if self.positions:
                correct += (out.argmax(dim=-1) == y).sum()
            elif self.classify:  # soft (N, K) targets of a batch_transform: their argmax
                correct += (out.argmax(dim=1) == (y if y.dim() == 1 else y.argmax(1))).sum()
            seen += n
            state.step += 1
            if step % self.log_every == 0:
                state.batch_loss = self._finite(float(loss.detach()), step)
                self.reporter.update(step, state.batch_loss)
            for cb in self.callbacks:
                cb.on_batch_end(state)
        if self.shard is not None:  # the sums of every rank
            loss_sum, correct, seen = self.shard.reduce(loss_sum, correct, seen)
        train_time = time.perf_counter() - epoch_start
        self.train_seconds += train_time
        self.trained_samples += seen
        seen = max(seen, 1)  # not 0 unless every Poisson batch of the epoch was empty
        train_metrics = {"loss": self._finite(float(loss_sum) / seen, self.steps)}
        if self.classify:
            train_metrics["accuracy"] = int(correct) / (seen * max(1, self.positions))
        val_metrics = (
            {}
            if self.val is None
            else self.shard.evaluate(self.model, self.val)
            if self.shard is not None
            else evaluate(self.model, self.val, device=self.dev)
        )
        self._epoch_end(train_metrics, val_metrics, time.perf_counter() - epoch_start)

    def _batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor | None, float]]:
        """The epoch's batches, each with the weight of its loss (1 but in a shard)."""
        if self.shard is not None:
            yield from self.shard.batches(self.train, self.generator)
            return
        batches = (
            self.private_batches()
            if self.private_batches is not None
            else self.train.batches(self.batch_size, shuffle=True, generator=self.generator)
        )
        for xb, yb in batches:
            yield xb, yb, 1.0

    def _step(
        self, xb: torch.Tensor, yb: torch.Tensor, scale: float = 1.0
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = to_float_batch(xb, self.dev)
        y = yb.to(self.dev, non_blocking=True)
        if self.batch_transform is not None:
            x, y = self.batch_transform(x, y)
        with torch.autocast(self.dev.type, dtype=self.amp_dtype, enabled=self.amp):
            out = self.net(x)
            if not self.classify:
                out = out.reshape(y.shape)
            hook = self.loss_hook
            loss = self.criterion(out, y) if hook is None else hook(out, y, x)
        self.optimizer.zero_grad(set_to_none=True)
        if scale != 1.0:  # a rank's share of an uneven global batch (0: none, still a step)
            self.scaler.scale(loss * scale if y.shape[0] else out.sum() * 0.0).backward()
        else:
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
        if value is not None and best_is(self.monitor, value, self.best):
            self.best, self.best_epoch = value, state.epoch
        if self.scheduler is not None and not self.batch_schedule:
            if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                self.scheduler.step(value if value is not None else train_metrics["loss"])
            else:
                self.scheduler.step()
        for cb in self.callbacks:
            cb.on_epoch_end(state)
        if self.shard is not None:  # a callback on any rank may stop the run: all stop
            state.should_stop = self.shard.any(state.should_stop)
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
