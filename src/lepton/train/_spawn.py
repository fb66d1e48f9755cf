"""``fit(..., workers=N)`` in a plain process: start N worker processes, watch them, and
bring rank 0's weights and result back.

:func:`spawn_fit` starts the workers (forked or spawned, see :func:`_start_method`), hosts
the rendezvous store itself (a c10d ``TCPStore`` on 127.0.0.1, on a free port or
``MASTER_PORT``), sends each worker the model, the data and the options, relays rank 0's
progress and epoch records back (the progress bar and the tracking run stay in the caller's
process), watches the workers, and at the end loads rank 0's weights into the caller's
model. A worker that raises or dies stops the
others at once, and its error is raised here.

What a rank does inside the process group (the shard it trains on, joining a group) is
:mod:`lepton.train._distributed`. The messages between the caller and its own worker
processes are pickled, as :mod:`multiprocessing` does: they never leave this machine's
processes, and nothing is read from a file.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import socket
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from multiprocessing.reduction import ForkingPickler
from queue import Empty
from typing import Any, cast

import torch
import torch.distributed as dist
from torch import nn

from lepton._context import forget_active_run
from lepton.data import Dataset
from lepton.errors import DistributedError, LeptonError, PortInUseError, WorkerFailedError
from lepton.train import _distributed
from lepton.train._callbacks import Callback, EpochRecord, TrainState
from lepton.train._distributed import TIMEOUT_S, _first_line, global_batch, open_store
from lepton.train._progress import Reporter
from lepton.train._result import FitResult

__all__ = ["spawn_fit"]

_GRACE_S = 1.0  # after a first failure: time to hear the root cause before stopping all


@dataclass(frozen=True)
class _Job:
    world: int
    address: str
    port: int
    backend: str
    threads: int | None
    timeout_s: float


def _free_port_or_raise(address: str, port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((address, port))
        except OSError:
            raise PortInUseError(
                f"port {port} on {address} is in use by another process, so the workers "
                f"cannot meet there; stop that process, choose another MASTER_PORT, or unset "
                f"MASTER_PORT to let Lepton pick a free one"
            ) from None


def _start_method(device: torch.device, threads: int | None) -> str:
    """How the workers start: ``fork`` where it is safe, else ``spawn``.

    A forked worker starts in milliseconds with everything already imported; ``spawn``
    costs each worker a fresh interpreter and ``import torch`` (seconds, most of a short
    run). Forking is safe on the CPU when each worker computes on one thread: OpenMP's
    thread pool does not survive a fork, and a child that opens a parallel region after
    its parent used one hangs (seen here with two threads per worker). CUDA cannot be
    forked at all.
    """
    cpu_only = device.type == "cpu" and not torch.cuda.is_initialized()  # type: ignore[no-untyped-call]
    return "fork" if sys.platform == "linux" and cpu_only and threads == 1 else "spawn"


def _payloads(world: int, parts: dict[str, Any], *, private: set[str]) -> list[bytes]:
    """One pickle per worker; what cannot be pickled is named. The data travels through
    shared memory (read only, one copy for all workers; each shared-memory handle can be
    opened once, hence one pickle per worker); the parts in ``private`` (the model, the
    callbacks: what training changes) are copied, or the workers would step one shared set
    of weights."""
    ready: dict[str, Any] = {}
    for what, value in parts.items():
        try:
            ready[what] = pickle.dumps(value) if what in private else value
            ForkingPickler.dumps(ready[what])
        except Exception as exc:
            raise DistributedError(
                f"workers={world} sends {what} to worker processes, and it cannot be sent "
                f"({type(exc).__name__}: {_first_line(exc)}); define classes and functions at "
                f"a module's top level (not a lambda, a local function or a class defined in a "
                f"notebook), or use workers=1"
            ) from None
    return [bytes(ForkingPickler.dumps(tuple(ready.values()))) for _ in range(world)]


def spawn_fit(
    model: nn.Module,
    train: Dataset,
    val: Dataset | None,
    *,
    workers: int,
    options: dict[str, Any],
    name: str,
    caller_callbacks: list[Callback],
    device: torch.device,
    fit: Callable[..., FitResult],
) -> FitResult:
    """``fit(..., workers=N)`` from a plain process: start, relay, watch, collect.

    ``options`` are fit's keyword arguments for the workers, which call ``fit`` (passed in:
    it imports this module); ``caller_callbacks`` run here on each epoch's record (the
    tracking run's logger, callbacks marked ``in_caller``).
    """
    import torch.multiprocessing as tmp

    started = time.perf_counter()
    global_batch(options["batch_size"], workers, options["per_worker_batch"])
    if device.type == "cuda" and torch.cuda.device_count() < workers:
        raise DistributedError(
            f"workers={workers} on the GPU takes one GPU per worker and "
            f"{torch.cuda.device_count()} are visible; use at most that many workers, or "
            f"device='cpu'"
        )
    threads = options.get("num_threads")
    if not threads and device.type == "cpu":
        from lepton.config import get_settings

        # the budget of this process (LEPTON_NUM_THREADS, else the cores), split
        threads = max(1, (get_settings().num_threads or os.cpu_count() or 1) // workers)
    options = {**options, "num_threads": threads}
    address = "127.0.0.1"
    wanted = int(os.environ.get("MASTER_PORT", "0"))
    if wanted:
        _free_port_or_raise(address, wanted)
    model_cpu = model.to("cpu")
    payloads = _payloads(
        workers,
        {
            "the model": model_cpu,
            "the training data": train,
            "the validation data": val,
            "the callbacks and the loss hook": options,
        },
        private={"the model", "the callbacks and the loss hook"},
    )
    store = open_store(address, wanted, world=workers, host=True, timeout_s=30, wait=False)
    job = _Job(
        world=workers,
        address=address,
        port=store.port,
        backend="nccl" if device.type == "cuda" else "gloo",
        threads=threads,
        timeout_s=TIMEOUT_S,
    )
    method = _start_method(device, threads)
    ctx: Any = tmp.get_context(method)
    queue = ctx.Queue()
    procs = [
        ctx.Process(target=_worker_main, args=(rank, job, payloads[rank], queue, fit), daemon=True)
        for rank in range(workers)
    ]
    reporter = Reporter(quiet=bool(options.get("quiet")), name=name)
    state = TrainState(
        model=model,
        optimizer=cast(torch.optim.Optimizer, None),  # caller-side callbacks read history only
        epochs=int(options["epochs"]),
    )
    watcher = _Watcher(procs, queue, reporter, state, caller_callbacks)
    try:
        for proc in procs:
            proc.start()
        outcome = watcher.watch()
    finally:
        watcher.stop_all()
        reporter.close()
        del store
    weights, result = outcome
    model.load_state_dict(weights)
    model.to(device)
    for cb in caller_callbacks:
        cb.on_fit_end(state)
    result.seconds = time.perf_counter() - started
    return result


_SYMPTOMS = (
    "gloo/transport",
    "connection closed by peer",
    "connection reset by peer",
    "remote worker",
    "broken pipe",
    "nccl",
)


def _symptom(exc: BaseException | None) -> bool:
    """Whether ``exc`` is how a rank learns that a peer is gone (not the root cause)."""
    if isinstance(exc, dist.DistError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and any(s in text for s in _SYMPTOMS)


class _Watcher:
    """The caller's loop while workers train: relay their messages, notice a failure."""

    def __init__(
        self,
        procs: list[Any],
        queue: Any,
        reporter: Reporter,
        state: TrainState,
        callbacks: list[Callback],
    ) -> None:
        self.procs, self.queue, self.reporter = procs, queue, reporter
        self.state, self.callbacks = state, callbacks
        self.errors: dict[int, tuple[BaseException | None, str]] = {}
        self.result: tuple[dict[str, torch.Tensor], FitResult] | None = None
        self.started_fit = False

    def _handle(self, msg: tuple[Any, ...]) -> None:
        kind, payload = msg[0], msg[1:]
        if kind == "error":
            rank, blob, text = payload
            exc: BaseException | None = None
            if blob is not None:
                with contextlib.suppress(Exception):
                    exc = pickle.loads(blob)
            self.errors.setdefault(rank, (exc, text))
        elif kind == "result":
            self.result = pickle.loads(payload[0])
        elif kind == "start":
            epochs, steps, resumed = payload[0]
            self.reporter.start(epochs, steps, resumed_from=resumed)
            if not self.started_fit:
                self.started_fit = True
                for cb in self.callbacks:
                    cb.on_fit_start(self.state)
        elif kind == "start_epoch":
            self.reporter.start_epoch(*payload[0])
        elif kind == "update":
            self.reporter.update(*payload[0])
        elif kind == "end_epoch":
            raw, epochs = payload[0]
            record = EpochRecord.from_dict(raw)
            self.reporter.end_epoch(record, epochs)
            self.state.history.append(record)
            self.state.epoch = record.epoch
            for cb in self.callbacks:
                cb.on_epoch_end(self.state)
        elif kind == "close":
            self.reporter.close()

    def _drain(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while True:
            left = deadline - time.monotonic()
            try:
                self._handle(self.queue.get(timeout=max(left, 0.01)))
            except Empty:
                if left <= 0:
                    return

    def _failed(self) -> list[int]:
        return [i for i, p in enumerate(self.procs) if p.exitcode not in (None, 0)]

    def watch(self) -> tuple[dict[str, torch.Tensor], FitResult]:
        while True:
            with contextlib.suppress(Empty):
                self._handle(self.queue.get(timeout=0.1))
            if self.errors or self._failed():
                self._drain(_GRACE_S)  # the root cause may come a moment after a symptom
                raise self._failure()
            if all(p.exitcode == 0 for p in self.procs):
                self._drain(0.2)
                if self.result is None:
                    raise WorkerFailedError(
                        "every worker exited but rank 0 sent no result; see the output above"
                    )
                return self.result

    def _failure(self) -> BaseException:
        world = len(self.procs)
        # the root cause: an error that is not a peer's broken connection, else a rank that
        # died without a word, else the first error heard
        causes = [  # in the order they arrived
            (rank, exc, text) for rank, (exc, text) in self.errors.items() if not _symptom(exc)
        ]
        silent = [r for r in self._failed() if r not in self.errors]
        if causes:
            rank, exc, text = causes[0]
        elif silent:
            code = self.procs[silent[0]].exitcode
            how = (
                f"was killed by signal {signal.Signals(-code).name}"
                if code < 0
                else f"exited with code {code}"
            )
            hint = (
                " before it started training; if this is a script, put the code that calls "
                "fit under `if __name__ == '__main__':` (worker processes import the script)"
                if not self.started_fit
                else " (out of memory, killed, or os._exit)"
            )
            return WorkerFailedError(
                f"worker rank {silent[0]} of {world} {how}{hint}; the other workers were stopped"
            )
        else:
            rank, (exc, text) = next(iter(self.errors.items()))
        if isinstance(exc, LeptonError):  # the same error a single process would raise
            exc.add_note(f"(raised on worker rank {rank} of {world}; the others were stopped)")
            return exc
        what = f"{type(exc).__name__}: {_first_line(exc)}" if exc else text.strip().splitlines()[-1]
        error = WorkerFailedError(
            f"worker rank {rank} of {world} failed with {what}; the other workers were "
            f"stopped. Its traceback:\n{text.rstrip()}"
        )
        error.__cause__ = exc
        return error

    def stop_all(self) -> None:
        """Stop every worker still running: SIGTERM, then SIGKILL after 3 s."""
        for p in self.procs:
            if p.is_alive():
                p.terminate()
        deadline = time.monotonic() + 3
        for p in self.procs:
            if p.pid is None:
                continue
            p.join(timeout=max(deadline - time.monotonic(), 0.01))
            if p.is_alive():
                p.kill()
                p.join(timeout=1)


# -- fit(workers=N): a worker's side ----------------------------------------------------------
def _worker_main(
    rank: int, job: _Job, payload: bytes, queue: Any, fit: Callable[..., FitResult]
) -> None:
    """One worker: meet the others at the caller's store, run ``fit``, send rank 0's
    weights and result back; any error goes to the caller, then the process ends."""
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(job.world),
        LOCAL_WORLD_SIZE=str(job.world),
        MASTER_ADDR=job.address,
        MASTER_PORT=str(job.port),
    )
    forget_active_run()  # forked inside the caller's run: the caller logs what we relay
    try:
        if job.threads:
            torch.set_num_threads(job.threads)
        if job.backend == "nccl":
            torch.cuda.set_device(rank)
        # a slow start (imports on a busy machine) must not fail the others' wait; a
        # worker that dies is seen by the caller, which stops the rest
        store = open_store(
            job.address, job.port, world=job.world, host=False, timeout_s=job.timeout_s, wait=False
        )
        dist.init_process_group(
            job.backend,
            store=store,
            rank=rank,
            world_size=job.world,
            timeout=timedelta(seconds=job.timeout_s),
        )
        model_blob, train, val, options_blob = pickle.loads(payload)
        model, options = pickle.loads(model_blob), pickle.loads(options_blob)
        _distributed._RELAY = queue if rank == 0 else None  # read by join()
        result = fit(model, train, val, workers=job.world, **options)
        if rank == 0:
            weights = {k: v.detach().to("cpu").clone() for k, v in model.state_dict().items()}
            queue.put(("result", pickle.dumps((weights, result))))
    except BaseException as exc:
        blob: bytes | None
        try:
            blob = pickle.dumps(exc)
            pickle.loads(blob)
        except Exception:
            blob = None
        queue.put(("error", rank, blob, traceback.format_exc()))
        queue.close()
        queue.join_thread()
        sys.stdout.flush()
        os._exit(1)
    if dist.is_initialized():
        dist.destroy_process_group()
    queue.close()
    queue.join_thread()
