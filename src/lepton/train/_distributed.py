"""Data-parallel training for ``fit``: N worker processes, one loop, the same result.

There are three ways into a data-parallel ``fit``; all of them end in the same
:class:`~lepton.train._loop.Loop`, handed a :class:`Shard`:

* ``fit(..., workers=N)`` in a plain process: :func:`~lepton.train._spawn.spawn_fit`
  starts N worker processes that join a group the caller hosts, relays rank 0's progress
  back and loads its weights into the caller's model.
* Under ``torchrun`` / ``lepton launch`` (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
  ``MASTER_ADDR`` in the environment) the same script joins the process group those set
  up (:func:`join`), and rank 0 alone prints, tracks and writes checkpoints.
* A process group the caller initialised already is used as it is.

Inside the loop every rank sees the same global batches as a single process would: the
epoch's permutation is drawn from the fit's seeded generator (the draw the one-process
loop makes), and each global batch is cut into one contiguous part per rank. That is what
``DistributedSampler`` does (a seeded permutation, disjoint shards), but its strided shards
would give a different sample order than ``workers=1``; this order makes ``workers=N``
train the same weights as one process with the same global batch (up to float rounding),
and lets a checkpoint resume with another number of workers. Gradients are averaged by
``DistributedDataParallel``; each rank's loss is weighted by its share of the global batch
so an uneven last batch averages exactly as in one process. BatchNorm layers normalise
with the statistics of the global batch (an all-reduce of sums, differentiable, CPU and
GPU alike). Train metrics are summed over ranks; validation is split over ranks and its
torchmetrics states are gathered by torchmetrics' own sync.

Dropout masks and random transforms are drawn on each rank, so a model with dropout trains
as well with ``workers=N`` but not bit for bit like one process.
"""

from __future__ import annotations

import contextlib
import os
import types
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed import TCPStore  # type: ignore[attr-defined]

from lepton.data import Dataset
from lepton.errors import (
    DistributedError,
    PortInUseError,
    RendezvousError,
)
from lepton.train._batchnorm import global_batch_norm
from lepton.train._callbacks import EpochRecord
from lepton.train._metrics import _run, evaluate, loss_function
from lepton.train._progress import Reporter

__all__ = [
    "Shard",
    "global_batch",
    "is_launched",
    "join",
    "record_failure",
]

#: Seconds a collective (all-reduce, barrier) may wait for the slowest rank before the run
#: fails instead of hanging (``LEPTON_DIST_TIMEOUT_S``).
TIMEOUT_S = float(os.environ.get("LEPTON_DIST_TIMEOUT_S", "600"))
#: Seconds the workers of a ``torchrun``-style environment wait for each other to meet
#: (``LEPTON_RDZV_TIMEOUT_S``).
RENDEZVOUS_TIMEOUT_S = float(os.environ.get("LEPTON_RDZV_TIMEOUT_S", "120"))

_ENV = ("RANK", "WORLD_SIZE")


# -- which mode ---------------------------------------------------------------------------
def is_launched() -> bool:
    """Whether this process is one rank of a launched job (``torchrun``, ``lepton
    launch``, ``fit(workers=N)``'s own workers, or a group the caller initialised)."""
    if dist.is_available() and dist.is_initialized():
        return True
    return all(k in os.environ for k in _ENV) and int(os.environ["WORLD_SIZE"]) > 1


def global_batch(batch_size: int, world: int, per_worker_batch: bool) -> int:
    """The samples per optimizer step over all ``world`` workers, checked."""
    if per_worker_batch:
        return batch_size * world
    if batch_size % world:
        low, high = batch_size - batch_size % world, batch_size - batch_size % world + world
        raise DistributedError(
            f"batch_size={batch_size} is the global batch and does not split evenly over "
            f"{world} workers; use a multiple of {world} (e.g. {low or world} or {high}), or "
            f"per_worker_batch=True to give each worker {batch_size} samples (a global batch "
            f"of {batch_size * world})"
        )
    return batch_size


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


# -- the shard a rank trains on -------------------------------------------------------------
@dataclass
class Shard:
    """One rank's view of a data-parallel ``fit``: who it is, and the collectives the loop
    needs (private: made by :func:`join`)."""

    rank: int
    world: int
    local_rank: int
    device: torch.device
    batch: int  # the global batch
    per_worker_batch: bool
    sync_batchnorm: bool
    owns_group: bool  # fit initialised the process group, so fit destroys it
    relay: Any = None  # rank 0 of fit(workers=N): the queue to the caller's process
    _patched: list[nn.Module] = field(default_factory=list)

    @property
    def is_main(self) -> bool:
        """Rank 0: the rank that prints, tracks and writes checkpoints."""
        return self.rank == 0

    def describe(self) -> dict[str, Any]:
        """What the result and the tracking run record about the split."""
        return {
            "workers": self.world,
            "global_batch": self.batch,
            "per_worker_batch": self.per_worker_batch,
            "batch_per_worker": self.batch // self.world,
            "sync_batchnorm": self.sync_batchnorm,
            "backend": dist.get_backend(),
        }

    # -- model --------------------------------------------------------------------------
    def wrap(self, model: nn.Module) -> nn.Module:
        """Global-batch BatchNorm in ``model`` (in place, unless ``sync_batchnorm`` is off),
        then ``DistributedDataParallel`` around it: the module the loop calls. ``model``
        itself keeps its state-dict names."""
        from torch.nn.parallel import DistributedDataParallel

        for module in model.modules() if self.sync_batchnorm else ():
            if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(
                module, nn.SyncBatchNorm
            ):
                module.forward = types.MethodType(global_batch_norm, module)  # type: ignore[method-assign]
                self._patched.append(module)
        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)

    # -- data ---------------------------------------------------------------------------
    def bounds(self, n: int) -> tuple[int, int]:
        """This rank's contiguous part of ``n`` items (the first ``n % world`` ranks get
        one more)."""
        base, extra = divmod(n, self.world)
        lo = self.rank * base + min(self.rank, extra)
        return lo, lo + base + (1 if self.rank < extra else 0)

    def batches(
        self, ds: Dataset, generator: torch.Generator
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor | None, float]]:
        """This rank's part of each global batch, and the weight of its loss: the global
        order is the one :meth:`Dataset.batches` draws with ``shuffle=True``."""
        n = len(ds)
        order = torch.randperm(n, generator=generator)  # the one-process draw, same state
        for start in range(0, n, self.batch):
            idx = order[start : start + self.batch]
            lo, hi = self.bounds(len(idx))
            part = idx[lo:hi]
            xb = ds.features[part]
            yb = ds.targets[part] if ds.targets is not None else None
            if ds.transform is not None:
                xb = ds.transform(xb)
            # DDP averages the ranks' gradients: weight each rank's mean loss by its share
            yield xb, yb, (hi - lo) * self.world / len(idx)

    # -- metrics ------------------------------------------------------------------------
    def reduce(
        self, loss_sum: torch.Tensor, correct: torch.Tensor, seen: int
    ) -> tuple[torch.Tensor, torch.Tensor, int]:
        """The epoch's train sums over every rank."""
        buf = torch.stack(
            [
                loss_sum.detach().to(torch.float64),
                correct.to(torch.float64),
                torch.tensor(float(seen), dtype=torch.float64, device=loss_sum.device),
            ]
        )
        dist.all_reduce(buf)
        return buf[0], buf[1].round().to(torch.int64), int(buf[2].round())

    @torch.no_grad()
    def evaluate(self, model: nn.Module, data: Dataset) -> dict[str, float]:
        """Validation split over the ranks; torchmetrics gathers its states on compute."""
        n = len(data)
        if n < self.world:  # too small to split: every rank evaluates it all (same values)
            return evaluate(model, data, device=self.device)
        lo, hi = self.bounds(n)
        was_training = model.training
        model.eval()
        try:
            metrics, total = _run(
                model, data.subset(slice(lo, hi)), loss_function(data.task), self.device, 1024
            )
        finally:
            model.train(was_training)
        computed = metrics.compute()  # sync_on_compute: every rank's states, gathered
        loss = torch.tensor(total, dtype=torch.float64, device=self.device)
        dist.all_reduce(loss)
        order = ("accuracy", "f1", "precision", "recall", "auc", "mse", "mae", "r2")
        return {"loss": float(loss) / n} | {k: float(computed[k]) for k in order if k in computed}

    def any(self, flag: bool) -> bool:
        """Whether ``flag`` is set on any rank (a callback's ``should_stop``)."""
        t = torch.tensor([1 if flag else 0], device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def reporter(self, *, quiet: bool, name: str) -> Reporter:
        """Rank 0's progress (relayed to the caller under ``fit(workers=N)``); the other
        ranks print nothing."""
        if not self.is_main:
            return Reporter(quiet=True, name=name)
        if self.relay is not None:
            return _RelayReporter(self.relay, name=name)
        return Reporter(quiet=quiet, name=name)

    def close(self) -> None:
        """Undo :meth:`wrap`'s BatchNorm change; destroy the group if fit made it."""
        for module in self._patched:
            with contextlib.suppress(AttributeError):
                del module.forward
        self._patched.clear()
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()


# -- joining a group ------------------------------------------------------------------------
def _resolve(device: str | torch.device, local_rank: int) -> torch.device:
    from lepton.train._setup import resolve_device

    dev = resolve_device(device)
    if dev.type != "cuda":
        return dev
    count = torch.cuda.device_count()
    if local_rank >= count:
        raise DistributedError(
            f"worker with local rank {local_rank} needs GPU {local_rank} but {count} GPU(s) "
            f"are visible: start at most {count} workers per machine, or use device='cpu'"
        )
    torch.cuda.set_device(local_rank)
    return torch.device("cuda", local_rank)


def join(
    workers: int | None,
    *,
    batch_size: int,
    per_worker_batch: bool,
    device: str | torch.device,
    sync_batchnorm: bool = True,
) -> Shard:
    """This process's :class:`Shard` of a launched job: the process group the caller (or
    :func:`~lepton.train._spawn.spawn_fit`) initialised, else the one ``torchrun``'s
    environment describes."""
    owns = False
    if dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
        local_rank = int(os.environ.get("LOCAL_RANK", rank))
        source = "the initialised process group"
    else:
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        source = "torchrun's environment (WORLD_SIZE)"
    if workers is not None and workers != world:
        raise DistributedError(
            f"fit(workers={workers}) runs in a job of {world} processes ({source}); launch "
            f"{workers} processes (e.g. `lepton launch --nproc-per-node {workers} ...`) or "
            f"call fit with workers={world} or without workers"
        )
    if not 0 <= rank < world:
        raise RendezvousError(f"RANK={rank} is outside WORLD_SIZE={world}; check the launcher")
    batch = global_batch(batch_size, world, per_worker_batch)
    dev = _resolve(device, local_rank)
    if not dist.is_initialized():
        _init_from_env(rank, world, "nccl" if dev.type == "cuda" else "gloo")
        owns = True
    return Shard(
        rank=rank,
        world=world,
        local_rank=local_rank,
        device=dev,
        batch=batch,
        per_worker_batch=per_worker_batch,
        sync_batchnorm=sync_batchnorm,
        owns_group=owns,
        relay=_RELAY,
    )


def _init_from_env(rank: int, world: int, backend: str) -> None:
    timeout = timedelta(seconds=TIMEOUT_S)
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True":
        # torchrun's agent met the other nodes already and hosts the store: join it
        dist.init_process_group(backend, init_method="env://", timeout=timeout)
        return
    if "MASTER_ADDR" not in os.environ or "MASTER_PORT" not in os.environ:
        raise RendezvousError(
            "RANK and WORLD_SIZE are set but MASTER_ADDR or MASTER_PORT is not; start the "
            "script with `lepton launch` or torchrun, which set all four"
        )
    store = open_store(
        os.environ["MASTER_ADDR"],
        int(os.environ["MASTER_PORT"]),
        world=world,
        host=rank == 0,
        timeout_s=RENDEZVOUS_TIMEOUT_S,
    )
    dist.init_process_group(backend, store=store, rank=rank, world_size=world, timeout=timeout)


def open_store(
    address: str, port: int, *, world: int, host: bool, timeout_s: float, wait: bool = True
) -> TCPStore:
    """A c10d ``TCPStore``: hosted here (``host``) or reached at ``address:port``; the
    failures a person can fix become a :class:`RendezvousError` that says how."""
    try:
        return TCPStore(
            address,
            port,
            world if wait else None,
            host,
            timedelta(seconds=timeout_s),
            wait_for_workers=wait,
        )
    except (RuntimeError, TimeoutError, ValueError) as exc:
        line = _first_line(exc)
        if host and ("EADDRINUSE" in line or "address already in use" in line.lower()):
            raise PortInUseError(
                f"port {port} on {address} is in use by another process, so the workers "
                f"cannot meet there; stop that process, or pick a free port (MASTER_PORT, or "
                f"`lepton launch --rdzv-endpoint {address}:OTHER_PORT`)"
            ) from None
        if host:
            raise RendezvousError(
                f"waited {timeout_s:g}s at {address}:{port} for {world} workers and not all "
                f"came ({line}); start WORLD_SIZE={world} processes with the same MASTER_ADDR "
                f"and MASTER_PORT, or set WORLD_SIZE to the number you start"
            ) from None
        raise RendezvousError(
            f"could not reach the rendezvous at {address}:{port} within {timeout_s:g}s "
            f"({line}); check MASTER_ADDR/MASTER_PORT (or --rdzv-endpoint) name the machine "
            f"and port of rank 0, and that rank 0 is running"
        ) from None


def record_failure(exc: BaseException) -> None:
    """Under ``torchrun``, write ``exc`` where the elastic agent looks for a worker's
    error, so ``lepton launch`` reports this rank's error and not only its exit code."""
    if not os.environ.get("TORCHELASTIC_ERROR_FILE") or not isinstance(exc, Exception):
        return
    from torch.distributed.elastic.multiprocessing.errors import ErrorHandler

    with contextlib.suppress(Exception):
        ErrorHandler().record_exception(exc)


# -- rank 0's progress, relayed to the caller of fit(workers=N) ------------------------------
_RELAY: Any = None  # set in rank 0 of fit(workers=N)'s workers: the queue to the caller


class _RelayReporter(Reporter):
    """Rank 0's progress, sent to the caller's process (which prints it)."""

    def __init__(self, queue: Any, *, name: str) -> None:
        super().__init__(quiet=True, name=name)
        self.queue = queue

    def start(self, epochs: int, steps_per_epoch: int, *, resumed_from: int = 0) -> None:
        self.queue.put(("start", (epochs, steps_per_epoch, resumed_from)))

    def start_epoch(self, epoch: int, epochs: int, steps: int) -> None:
        self.queue.put(("start_epoch", (epoch, epochs, steps)))

    def update(self, step: int, loss: float) -> None:
        self.queue.put(("update", (step, loss)))

    def end_epoch(self, record: EpochRecord, epochs: int) -> None:
        self.queue.put(("end_epoch", (record.to_dict(), epochs)))

    def close(self) -> None:
        self.queue.put(("close", ()))
