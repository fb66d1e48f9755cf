"""The PyTorch Lightning arm of ``trainer_overhead.py``; runs in ``benchmarks/.venvs/lightning``.

It gets the data (real MNIST exported by the parent) and the initial weights as an .npz,
builds the shared :class:`PlainConvNet`, and trains one epoch with ``lightning.Trainer``:
AdamW(lr 1e-3, weight decay 0.01), no validation, no checkpointing, no logger, no progress
bar, no model summary. Batches are cut by slicing the tensors with a ``BatchSampler`` (the
fastest way to feed a ``DataLoader`` from in-memory tensors, like ``lp.fit`` and the hand
loop), so the comparison is of the trainers, not of per-sample collation.

Two modes:

* single process (default): a server. For each ``fit [weights.npz]`` line on stdin it
  trains a fresh model and prints one JSON line; ``quit`` ends it. Keeping the process up
  lets the parent interleave Lightning with the in-process arms without paying Python and
  Lightning imports every repeat (the in-process arms do not pay them either).
* ``--ddp N``: one ``Trainer(strategy="ddp", devices=N, accelerator="cpu")`` run; Lightning
  re-runs this script for ranks 1..N-1 and rank 0 prints the JSON line. Each process
  loads ``batch_size / N`` samples per step (the global batch stays ``batch_size``).
  BatchNorm statistics are per rank: Lightning's ``sync_batchnorm=True`` (what
  ``lp.fit(workers=N)`` computes, statistics over the global batch) needs GPU modules in
  torch ("SyncBatchNorm layers only work with GPU modules"), so it cannot run here.

The JSON has ``seconds`` (Trainer built + ``fit`` returned, the whole call, rank 0) and
``epoch_seconds`` (``on_train_epoch_start`` to ``on_train_epoch_end``, steps only).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import lightning as L
import numpy as np
import torch
from torch import nn
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    DistributedSampler,
    RandomSampler,
    Sampler,
    TensorDataset,
)

from _lightning_model import PlainConvNet


class Module(L.LightningModule):  # type: ignore[misc]
    def __init__(self, model: nn.Module, data: TensorDataset, batch: int, ddp: bool) -> None:
        super().__init__()
        self.model = model
        self.data = data
        self.batch = batch
        self.ddp = ddp
        self.criterion = nn.CrossEntropyLoss()

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        return self.criterion(self.model(x), y)  # type: ignore[no-any-return]

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.model.parameters(), lr=1e-3, weight_decay=0.01)

    def train_dataloader(self) -> DataLoader[Any]:
        base: Sampler[int]
        if self.ddp:  # called after the process group is up: rank and world from it
            base = DistributedSampler(self.data, shuffle=True, seed=0)
        else:  # the same order as the hand loop: randperm with a generator seeded 0
            base = RandomSampler(self.data, generator=torch.Generator().manual_seed(0))
        # batch_size=None: the dataset gets the whole index list and slices its tensors
        return DataLoader(
            self.data, batch_size=None, sampler=BatchSampler(base, self.batch, drop_last=False)
        )


class EpochTimer(L.Callback):  # type: ignore[misc]
    def __init__(self) -> None:
        self.start = self.seconds = 0.0

    def on_train_epoch_start(self, trainer: Any, module: Any) -> None:
        self.start = time.perf_counter()

    def on_train_epoch_end(self, trainer: Any, module: Any) -> None:
        self.seconds = time.perf_counter() - self.start


def fit_once(args: argparse.Namespace, npz: Any, save: str | None) -> dict[str, Any] | None:
    data = TensorDataset(torch.from_numpy(npz["x"]), torch.from_numpy(npz["y"]))
    model = PlainConvNet()
    model.load_state_dict(
        {k[2:]: torch.from_numpy(npz[k]) for k in npz.files if k.startswith("w:")}, strict=True
    )
    world = args.ddp or 1
    module = Module(model, data, args.batch_size // world, ddp=bool(args.ddp))
    timer = EpochTimer()
    torch.manual_seed(0)  # dropout masks, as the hand loop seeds them
    t0 = time.perf_counter()
    trainer = L.Trainer(
        accelerator="cpu",
        devices=world,
        strategy="ddp" if args.ddp else "auto",
        max_epochs=1,
        enable_progress_bar=False,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        use_distributed_sampler=False,
        callbacks=[timer],
    )
    trainer.fit(module)
    seconds = time.perf_counter() - t0
    if trainer.global_rank != 0:
        return None
    if save:
        np.savez(save, **{k: v.detach().numpy() for k, v in model.state_dict().items()})
    return {
        "samples": len(data),
        "seconds": seconds,
        "epoch_seconds": timer.seconds,
        "threads": torch.get_num_threads(),
        "lightning": L.__version__,
        "torch": torch.__version__,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--ddp", type=int, default=0, help="processes; 0: one, no DDP")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))  # Lightning's DDP reads it
    npz = np.load(args.data)
    if args.ddp:
        out = fit_once(args, npz, None)
        if out is not None:
            print(json.dumps(out), flush=True)
        return
    for line in sys.stdin:
        words = line.split()
        if not words or words[0] == "quit":
            break
        out = fit_once(args, npz, words[1] if len(words) > 1 else None)
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
