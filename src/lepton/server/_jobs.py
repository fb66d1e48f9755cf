"""Jobs: typed specs, the executor contract with a local (subprocess) executor, and the
scheduler that runs them in CPU, GPU and memory slots with priorities, retries and resume.

A job is a typed spec (:class:`TrainJob`, :class:`EvaluateJob`), never a shell string.
Each attempt runs in a worker process, ``python -m lepton.server._runner JOB_ID``, which
reads the spec from the database and keeps everything in the job's folder::

    home/jobs/<id>/
      log.txt          stdout + stderr of every attempt, and the scheduler's notes
      result.json      the outcome, written atomically as the worker's last act
      checkpoints/     one per epoch: a retry resumes from the newest
      output/          model.safetensors, manifest.json, dataset.json (train jobs)

States: ``queued`` -> ``running`` -> ``succeeded`` | ``failed`` | ``cancelled`` |
``lost``; ``running`` -> ``cancelling`` -> ``cancelled``. A crash (a signal such as the
OOM killer's SIGKILL, an unexpected exit) puts the job back to ``queued`` after a backoff
while attempts remain; a deterministic failure (a :class:`~lepton.errors.LeptonError` in
the worker, exit code 3) does not, since it would fail the same way again.

Example:
    >>> manager = JobManager(open_database(), get_settings().home)  # doctest: +SKIP
    >>> manager.start()  # adopts the jobs of a previous server, then ticks  # doctest: +SKIP
    >>> manager.submit(JobRequest(spec=TrainJob(model="mlp")), "alice")  # doctest: +SKIP
"""

from __future__ import annotations

import builtins
import contextlib
import json
import logging
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol, TypeAlias

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from sqlalchemy import func, or_, select

from lepton import data as lp_data
from lepton import models as lp_models
from lepton.errors import ConflictError, JobError, NotFoundError, RegistryError
from lepton.registry import ModelVersion
from lepton.registry._registry import validate_name
from lepton.storage import Database
from lepton.storage._schema import Job

__all__ = [
    "DETERMINISTIC_EXIT",
    "STATES",
    "Capacity",
    "EvaluateJob",
    "Executor",
    "ExitStatus",
    "JobManager",
    "JobRequest",
    "JobSpec",
    "JobState",
    "JobView",
    "LocalExecutor",
    "TrainJob",
]

logger = logging.getLogger("lepton.server.jobs")

JobState: TypeAlias = Literal[
    "queued", "running", "cancelling", "succeeded", "failed", "cancelled", "lost"
]
STATES: tuple[JobState, ...] = (
    "queued", "running", "cancelling", "succeeded", "failed", "cancelled", "lost",
)  # fmt: skip
ACTIVE: tuple[JobState, ...] = ("running", "cancelling")  # a worker process exists
TERMINAL = frozenset({"succeeded", "failed", "cancelled", "lost"})
DETERMINISTIC_EXIT = 3  # the worker's exit code for a failure that a retry would repeat

# -- specs ------------------------------------------------------------------------------
JsonScalar: TypeAlias = str | int | float | bool | None
ConfigValue: TypeAlias = JsonScalar | list[JsonScalar]
_MODEL_REF = r"^[a-z0-9][a-z0-9._-]{0,99}(:[0-9]{1,9}|@[a-z0-9_-]{1,64})?$"


def _dataset_name(value: str) -> str:
    names = [d.name for d in lp_data.list_datasets()]
    key = value.strip().lower().replace("_", "-")
    if key not in names:
        raise ValueError(
            f"unknown dataset {value!r}; use one of {', '.join(names)} (`lepton data list`)"
        )
    return key


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class TrainJob(_Spec):
    """Train a zoo model on a catalog dataset, test it, save it, optionally register it.

    Example: ``{"kind": "train", "model": "mlp", "data": "mnist", "epochs": 2}``.
    """

    model_config = ConfigDict(serialize_by_alias=True)

    kind: Literal["train"] = "train"
    model: str = Field("convnet", description="Zoo model (`lepton models zoo`).")
    data: str = Field("mnist", description="Catalog dataset (`lepton data list`).")
    epochs: int = Field(3, ge=1, le=1000)
    batch_size: int = Field(64, ge=1, le=65536)
    optimizer: Literal["adamw", "adam", "sgd", "adagrad", "rmsprop"] = "adamw"
    lr: float = Field(1e-3, gt=0, le=10)
    weight_decay: float | None = Field(None, ge=0, le=1, description="None: 0.01 for adamw.")
    schedule: Literal["cosine", "onecycle", "step", "plateau"] | None = None
    early_stopping: int | None = Field(None, ge=1, le=1000, description="Patience in epochs.")
    grad_clip: float | None = Field(None, gt=0, le=1e6)
    seed: int = Field(0, ge=0, le=2**32 - 1)
    val: Literal["holdout", "test", "none"] = "holdout"
    config: dict[str, ConfigValue] = Field(
        default_factory=dict, max_length=32, description="Model arguments, e.g. dropout."
    )
    # "register" is the field's name on the wire; as an attribute it would shadow
    # BaseModel.register (from ABCMeta)
    register_as: str | None = Field(
        None, alias="register", description="Register the result under this model name."
    )
    limit: int | None = Field(None, ge=1, le=100_000_000, description="Train on N samples.")

    @field_validator("model")
    @classmethod
    def _known_model(cls, value: str) -> str:
        if value not in lp_models.available_models():
            raise ValueError(
                f"unknown model {value!r}; use one of {', '.join(lp_models.available_models())}"
            )
        return value

    @field_validator("data")
    @classmethod
    def _known_data(cls, value: str) -> str:
        return _dataset_name(value)

    @field_validator("register_as")
    @classmethod
    def _model_name(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                validate_name(value)
            except RegistryError as exc:
                raise ValueError(exc.message) from None
        return value

    @model_validator(mode="after")
    def _config_fits_model(self) -> TrainJob:
        accepted = lp_models.model_parameters(self.model)
        unknown = sorted(set(self.config) - set(accepted))
        if unknown:
            raise ValueError(
                f"config keys {unknown} are not arguments of {self.model!r}; it takes "
                f"{', '.join(accepted)}"
            )
        if any(isinstance(v, list) and len(v) > 64 for v in self.config.values()):
            raise ValueError("config lists hold at most 64 values")
        return self


class EvaluateJob(_Spec):
    """Evaluate a registered model version on a catalog dataset split.

    Example: ``{"kind": "evaluate", "model_ref": "mnist-convnet@production", "data": "mnist"}``.
    """

    kind: Literal["evaluate"] = "evaluate"
    model_ref: str = Field(
        pattern=_MODEL_REF, description="'name', 'name:VERSION' or 'name@ALIAS_OR_STAGE'."
    )
    data: str = Field("mnist", description="Catalog dataset (`lepton data list`).")
    split: Literal["train", "test", "all"] = "test"
    limit: int | None = Field(None, ge=1, le=100_000_000, description="Use the first N rows.")

    @field_validator("data")
    @classmethod
    def _known_data(cls, value: str) -> str:
        return _dataset_name(value)


JobSpec = Annotated[TrainJob | EvaluateJob, Field(discriminator="kind")]


class JobRequest(BaseModel):
    """A spec plus what the job needs from the scheduler.

    ``cpus`` also sets the worker's torch threads; ``memory_mb`` is a reservation the
    scheduler counts, not a limit the kernel enforces.
    """

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    spec: JobSpec
    priority: int = Field(0, ge=-100, le=100, description="Higher starts first.")
    cpus: float = Field(1.0, gt=0, le=1024)
    gpus: int = Field(0, ge=0, le=64)
    memory_mb: int = Field(2048, ge=16, le=16 * 1024 * 1024)
    max_retries: int = Field(2, ge=0, le=10, description="Retries after a crash.")


class JobView(BaseModel):
    """A job as the API shows it (JSON-safe; the executor's handle stays inside)."""

    model_config = ConfigDict(frozen=True)

    id: int
    kind: str
    spec: dict[str, Any]
    state: JobState
    priority: int
    cpus: float
    gpus: int
    memory_mb: int
    attempts: int = Field(description="Attempts started so far (a retry adds one).")
    max_retries: int
    not_before: float | None = Field(description="A retry waits until this time.")
    executor: str
    result: dict[str, Any] | None
    error: str | None
    run_id: int | None
    created_by: str
    created_at: float
    started_at: float | None = Field(description="When the latest attempt started.")
    ended_at: float | None

    @classmethod
    def from_row(cls, row: Job) -> JobView:
        """Freeze a database row."""
        return cls(
            id=row.id, kind=row.kind, spec=dict(row.spec), state=row.state,  # type: ignore[arg-type]
            priority=row.priority, cpus=row.cpus, gpus=row.gpus, memory_mb=row.memory_mb,
            attempts=row.attempts, max_retries=row.max_retries, not_before=row.not_before,
            executor=row.executor, result=row.result, error=row.error, run_id=row.run_id,
            created_by=row.created_by, created_at=row.created_at, started_at=row.started_at,
            ended_at=row.ended_at,
        )  # fmt: skip


# -- executors ----------------------------------------------------------------------------
@dataclass(frozen=True)
class ExitStatus:
    """How a worker ended: an exit ``code``, a ``signal``, or neither when unknown (a
    process this server did not start, e.g. one adopted after a restart)."""

    code: int | None = None
    signal: int | None = None

    def describe(self) -> str:
        """``"exit code 1"``, ``"killed by SIGKILL"`` or ``"ended"``."""
        if self.signal is not None:
            try:
                name = signal.Signals(self.signal).name
            except ValueError:
                name = f"signal {self.signal}"
            hint = " (out of memory?)" if self.signal == signal.SIGKILL else ""
            return f"killed by {name}{hint}"
        return f"exit code {self.code}" if self.code is not None else "ended"


class Executor(Protocol):
    """The contract between the scheduler and whatever runs workers.

    The scheduler owns the job's state; an executor only starts, watches and stops one
    worker per attempt. The worker writes its log and ``result.json`` into ``workdir``,
    so that folder must be readable by the server (a Ray executor would run the worker
    with the folder on shared storage, or copy both back). Every method is called from
    the scheduler's thread or an API thread, never at the same time for one handle.

    A Ray executor, for instance, would submit the same worker as a task with
    ``num_cpus``/``num_gpus`` and ``env`` as its runtime environment, return
    ``{"task": <ObjectRef hex>, "address": <cluster>}`` as the handle, poll with
    ``ray.wait(timeout=0)``, cancel with ``ray.cancel(ref, force=force)`` and adopt by
    looking the task up in the cluster's state API.

    Attributes:
        name: Stored with each job (``Job.executor``); a handle is only given back to an
            executor of the same name.
    """

    name: str

    def start(
        self, job_id: int, spec: dict[str, Any], workdir: Path, env: Mapping[str, str]
    ) -> dict[str, Any]:
        """Start the worker of ``job_id`` and return at once.

        Args:
            job_id: The job; the worker is told this number and nothing else of the user's.
            spec: The job's spec (JSON-safe), for executors that ship it with the task.
            workdir: The job's folder: log, result, checkpoints and output go there.
            env: Variables the worker needs (database URL, LEPTON_HOME, visible GPUs).

        Returns:
            A JSON-safe handle that :meth:`poll`, :meth:`cancel` and :meth:`adopt`
            accept, also from a new executor after a server restart.

        Raises:
            OSError: The worker could not be started.
        """
        ...

    def poll(self, handle: dict[str, Any]) -> ExitStatus | None:
        """``None`` while the worker runs; once it has ended, how it ended."""
        ...

    def cancel(self, handle: dict[str, Any], *, force: bool) -> None:
        """Ask the worker to stop (``force=False``: it gets to clean up) or stop it now.

        Returns at once; a worker that has already ended is left alone.
        """
        ...

    def adopt(self, handle: dict[str, Any]) -> bool:
        """After a server restart: whether the handle's worker still runs and is really
        the one that was started (not another process that reuses its id)."""
        ...


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """A process's state letter and start time (clock ticks after boot), from /proc."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()  # the name in (...) may hold spaces
    return fields[0], int(fields[19])  # fields 3 and 22 of proc(5)


class LocalExecutor:
    """Workers as local subprocesses, each in its own session (a process group).

    Output goes to ``workdir/log.txt``. The handle is ``{"pid", "start_time", "host"}``:
    the start time from ``/proc`` tells the worker apart from a later process that gets
    the same pid. Cancel sends SIGTERM to the whole group; ``force`` sends SIGKILL.

    Args:
        worker: The command before the job id; default: this Python running
            ``lepton.server._runner``. Always an argument list, never a shell string.
    """

    name = "local"

    def __init__(
        self, worker: Sequence[str] = (sys.executable, "-m", "lepton.server._runner")
    ) -> None:
        self.worker = tuple(worker)
        self._children: dict[int, subprocess.Popen[bytes]] = {}
        self._lock = threading.Lock()

    def start(
        self, job_id: int, spec: dict[str, Any], workdir: Path, env: Mapping[str, str]
    ) -> dict[str, Any]:
        """Start ``worker JOB_ID`` in ``workdir``; see :meth:`Executor.start`."""
        workdir.mkdir(parents=True, exist_ok=True)
        with open(workdir / "log.txt", "ab") as log:
            process = subprocess.Popen(
                [*self.worker, str(int(job_id))],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=workdir,
                env={**os.environ, **env},
                start_new_session=True,  # its own process group: cancel reaches its children
            )
        with self._lock:
            self._children[process.pid] = process
        stat = _proc_stat(process.pid)  # a zombie keeps its /proc entry until reaped
        return {
            "pid": process.pid,
            "start_time": stat[1] if stat else None,
            "host": socket.gethostname(),
        }

    def _alive(self, handle: Mapping[str, Any]) -> bool:
        pid, started = handle.get("pid"), handle.get("start_time")
        if not isinstance(pid, int) or pid <= 0 or handle.get("host") != socket.gethostname():
            return False
        stat = _proc_stat(pid)
        if stat is None:
            if Path("/proc/self/stat").exists():
                return False
            try:  # no /proc (not Linux): pid reuse cannot be detected
                os.kill(pid, 0)
            except ProcessLookupError:
                return False
            except PermissionError:
                return False  # someone else's process: not our worker
            return True
        state, start_time = stat
        return state not in ("Z", "X", "x") and (started is None or start_time == started)

    def poll(self, handle: dict[str, Any]) -> ExitStatus | None:
        """See :meth:`Executor.poll`; a worker adopted after a restart ends with an
        unknown status (its ``result.json`` tells how)."""
        with self._lock:
            process = self._children.get(handle.get("pid", -1))
            if process is not None:
                code = process.poll()
                if code is None:
                    return None
                del self._children[process.pid]
                return ExitStatus(code=code) if code >= 0 else ExitStatus(signal=-code)
        return None if self._alive(handle) else ExitStatus()

    def cancel(self, handle: dict[str, Any], *, force: bool) -> None:
        """SIGTERM (or SIGKILL with ``force``) to the worker's process group."""
        with self._lock:
            process = self._children.get(handle.get("pid", -1))
            if process is not None and process.poll() is not None:
                return
        if process is None and not self._alive(handle):
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(int(handle["pid"]), signal.SIGKILL if force else signal.SIGTERM)

    def adopt(self, handle: dict[str, Any]) -> bool:
        """See :meth:`Executor.adopt`: same host, same pid, same start time, not a zombie."""
        return self._alive(handle)


# -- the scheduler ------------------------------------------------------------------------
@dataclass(frozen=True)
class Capacity:
    """What the scheduler may hand out at once: CPUs, GPUs and memory (MiB)."""

    cpus: float
    gpus: int
    memory_mb: int

    @classmethod
    def detect(cls) -> Capacity:
        """This machine: its cores, its CUDA GPUs and its RAM (``/proc/meminfo``)."""
        import torch

        memory_mb = 4096
        try:
            for line in Path("/proc/meminfo").read_text().splitlines():
                if line.startswith("MemTotal:"):
                    memory_mb = int(line.split()[1]) // 1024
        except (OSError, ValueError, IndexError):
            with contextlib.suppress(ValueError, OSError, AttributeError):
                memory_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
        return cls(
            cpus=float(os.cpu_count() or 1), gpus=torch.cuda.device_count(), memory_mb=memory_mb
        )


@dataclass(frozen=True)
class _RunRef:
    id: int  # what register() reads of a run


class _DatasetSummary:
    """The parts of a training dataset the registry records, read from ``dataset.json``."""

    def __init__(self, raw: Mapping[str, Any]) -> None:
        self.name = str(raw["name"])
        self.rows = int(raw["rows"])
        self._fingerprint = str(raw["fingerprint"])
        self.preprocessing = list(raw.get("preprocessing") or [])
        self.input_shape = tuple(int(n) for n in raw["input_shape"])
        self.task = raw.get("task")
        self.classes = raw.get("classes")

    def __len__(self) -> int:
        return self.rows

    def fingerprint(self) -> str:
        return self._fingerprint


class JobManager:
    """Queue, schedule, watch, cancel, retry and recover jobs; one per database.

    Args:
        db: The metadata database (the workers open the same one).
        home: The server's ``LEPTON_HOME``, given to the workers too (so models they
            register land in the same artifact store); job folders are ``home/jobs/<id>``.
        executor: Runs the workers (default: :class:`LocalExecutor`).
        capacity: Slots to fill (default: :meth:`Capacity.detect`).
        grace_s: How long a cancelled worker may clean up before SIGKILL.
        backoff_s: Wait before the first retry; doubled for each further one.
        max_backoff_s: Longest wait before a retry.
        tick_s: Period of the background thread (:meth:`start`).
    """

    def __init__(
        self,
        db: Database,
        home: Path,
        executor: Executor | None = None,
        capacity: Capacity | None = None,
        *,
        grace_s: float = 10.0,
        backoff_s: float = 2.0,
        max_backoff_s: float = 300.0,
        tick_s: float = 0.5,
    ) -> None:
        self.db = db
        self.home = Path(home)
        self.jobs_dir = self.home / "jobs"
        self.executor: Executor = executor if executor is not None else LocalExecutor()
        self.capacity = capacity if capacity is not None else Capacity.detect()
        self.grace_s, self.backoff_s, self.max_backoff_s = grace_s, backoff_s, max_backoff_s
        self.tick_s = tick_s
        self._lock = threading.RLock()
        self._deadlines: dict[int, float] = {}  # cancelling job -> when SIGKILL is due
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._recovered = False

    # -- the API ----------------------------------------------------------------------
    def submit(self, request: JobRequest, user: str) -> JobView:
        """Queue a job; it starts when the slots it asks for are free.

        Raises:
            JobError: It asks for more than this server has, so it could never start.
        """
        cap, too_big = self.capacity, []
        if request.cpus > cap.cpus:
            too_big.append(f"cpus={request.cpus:g} (this server has {cap.cpus:g})")
        if request.gpus > cap.gpus:
            too_big.append(f"gpus={request.gpus} (this server has {cap.gpus})")
        if request.memory_mb > cap.memory_mb:
            too_big.append(f"memory_mb={request.memory_mb} (this server has {cap.memory_mb})")
        if too_big:
            raise JobError(
                f"this job could never start: it asks for {', '.join(too_big)}; ask for at "
                f"most what the server has"
            )
        spec = request.spec
        with self.db.session() as s:
            row = Job(
                kind=spec.kind, spec=spec.model_dump(mode="json"), state="queued",
                priority=request.priority, cpus=request.cpus, gpus=request.gpus,
                memory_mb=request.memory_mb, attempts=0, max_retries=request.max_retries,
                executor=self.executor.name, handle={}, created_by=user, created_at=time.time(),
            )  # fmt: skip
            s.add(row)
            s.flush()
            view = JobView.from_row(row)
        self._wake.set()
        return view

    def get(self, job_id: int) -> JobView:
        """One job. Raises :class:`NotFoundError` if there is none with this id."""
        with self.db.session() as s:
            return JobView.from_row(self._row(s, job_id))

    def list(
        self, state: str | None = None, offset: int = 0, limit: int = 50
    ) -> tuple[builtins.list[JobView], int]:
        """Jobs, newest first, and how many match in all (for paging)."""
        if state is not None and state not in STATES:
            raise JobError(f"state must be one of {', '.join(STATES)}, got {state!r}")
        if offset < 0 or not 1 <= limit <= 1000:
            raise JobError(f"need offset >= 0 and 1 <= limit <= 1000, got {offset}, {limit}")
        where = [Job.state == state] if state is not None else []
        with self.db.session() as s:
            total = s.scalar(select(func.count()).select_from(Job).where(*where)) or 0
            rows = s.scalars(
                select(Job).where(*where).order_by(Job.id.desc()).offset(offset).limit(limit)
            )
            return [JobView.from_row(r) for r in rows], total

    def cancel(self, job_id: int, user: str) -> JobView:
        """Cancel a job: a queued one at once, a running one with SIGTERM, then SIGKILL
        after ``grace_s`` (cancelling it again kills it at once).

        Raises:
            ConflictError: The job has already ended.
        """
        with self._lock:
            with self.db.session() as s:
                row = self._row(s, job_id)
                handle, force = dict(row.handle or {}), row.state == "cancelling"
                if row.state == "queued":
                    row.state, row.ended_at = "cancelled", time.time()
                    row.error = f"cancelled by {user} before it started"
                elif row.state == "running":
                    row.state, row.error = "cancelling", f"cancelled by {user}"
                elif row.state != "cancelling":
                    raise ConflictError(
                        f"job {job_id} has already ended ({row.state}); only queued or running "
                        f"jobs can be cancelled"
                    )
                state = row.state
            if state == "cancelling":
                how = "SIGKILL" if force else f"SIGTERM, SIGKILL in {self.grace_s:g}s"
                self._note(job_id, f"cancelled by {user}: {how}")
                self.executor.cancel(handle, force=force)
                self._deadlines[job_id] = time.time() + (0 if force else self.grace_s)
        return self.get(job_id)

    def logs(self, job_id: int, offset: int = 0, limit: int = 65536) -> tuple[str, int, bool]:
        """Read the job's log from byte ``offset``.

        Returns:
            ``(text, next_offset, finished)``: pass ``next_offset`` to the next call;
            ``finished`` is true once the job has ended and everything was read.
        """
        if offset < 0 or not 1 <= limit <= 2**20:
            raise JobError(f"need offset >= 0 and 1 <= limit <= 1048576, got {offset}, {limit}")
        ended = self.get(job_id).state in TERMINAL  # before reading: no last line is missed
        path = self._workdir(job_id) / "log.txt"
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except FileNotFoundError:
            return "", offset, ended
        except OSError as exc:
            raise JobError(f"cannot read the log of job {job_id} ({exc.strerror})") from None
        try:
            size = os.fstat(fd).st_size
            data = os.pread(fd, limit, offset) if offset < size else b""
        finally:
            os.close(fd)
        cut = _utf8_complete(data) or len(data)  # leave a split character for the next call
        end = min(offset, size) + cut
        return data[:cut].decode("utf-8", errors="replace"), end, ended and end >= size

    def register_output(self, job_id: int, name: str, user: str) -> ModelVersion:
        """Register the model a succeeded train job saved, as the next version of ``name``.

        Raises:
            ConflictError: The job is not a train job, has not succeeded, or its output
                folder is gone.
        """
        view = self.get(job_id)
        if view.kind != "train":
            raise ConflictError(f"job {job_id} is an {view.kind} job; only train jobs make models")
        if view.state != "succeeded":
            raise ConflictError(
                f"job {job_id} is {view.state}; register its model once it has succeeded"
            )
        from safetensors.torch import load_file

        from lepton.registry import register

        out = self._workdir(job_id) / "output"
        try:
            manifest = json.loads((out / "manifest.json").read_text())
            dataset = _DatasetSummary(json.loads((out / "dataset.json").read_text()))
            weights = load_file(str(out / "model.safetensors"))
        except (OSError, ValueError, KeyError) as exc:
            raise ConflictError(
                f"the output of job {job_id} is missing or damaged ({exc}); run the job again"
            ) from None
        model = lp_models.build(manifest["model"])
        model.load_state_dict(weights)
        return register(
            model.eval(), name, metrics=manifest.get("metrics"), dataset=dataset,
            run=_RunRef(view.run_id) if view.run_id is not None else None,
            description=f"Trained by job {job_id}; registered by {user}.", database=self.db,
        )  # fmt: skip

    # -- the loop -----------------------------------------------------------------------
    def start(self) -> None:
        """Recover jobs left by a previous server (once), then tick in a background thread."""
        with self._lock:
            if not self._recovered:
                self.recover()
            if self._thread is not None and self._thread.is_alive():
                return
            self._stopping = False
            self._thread = threading.Thread(target=self._loop, name="lepton-jobs", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the thread. Running workers keep running; the next server adopts them."""
        self._stopping = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _loop(self) -> None:
        while not self._stopping:
            try:
                self.tick()
            except Exception:
                logger.exception("the job scheduler's tick failed; trying again")
            self._wake.wait(self.tick_s)
            self._wake.clear()

    def tick(self) -> None:
        """One round: reap ended workers, escalate overdue cancels, start queued jobs by
        priority (then age) while they fit in the free slots."""
        with self._lock:
            with self.db.session() as s:
                active = [(r.id, r.state, dict(r.handle or {})) for r in self._active(s)]
            now = time.time()
            for job_id, state, handle in active:
                status = self.executor.poll(handle)
                if status is not None:
                    self._finish(job_id, status)
                elif state == "cancelling":
                    due = self._deadlines.setdefault(job_id, now + self.grace_s)
                    if now >= due:
                        self._note(
                            job_id, f"still running {self.grace_s:g}s after SIGTERM: SIGKILL"
                        )
                        self.executor.cancel(handle, force=True)
                        self._deadlines[job_id] = math.inf
            self._start_queued()

    def recover(self) -> dict[str, int]:
        """Once at server start: adopt workers that outlived the previous server; a job
        whose worker is gone is finished from its ``result.json``, retried from its last
        checkpoint while attempts remain, or marked ``lost``.

        Returns:
            How many jobs were ``adopted``, ``finished``, ``requeued`` and ``lost``.
        """
        counts = dict.fromkeys(("adopted", "finished", "requeued", "lost"), 0)
        with self._lock:
            with self.db.session() as s:
                active = [
                    (r.id, r.state, r.executor, dict(r.handle or {})) for r in self._active(s)
                ]
            for job_id, state, executor, handle in active:
                if executor == self.executor.name and self.executor.adopt(handle):
                    counts["adopted"] += 1
                    if state == "cancelling":  # the grace period starts again
                        self.executor.cancel(handle, force=False)
                        self._deadlines[job_id] = time.time() + self.grace_s
                    continue
                counts[self._finish(job_id, ExitStatus(), restarted=True)] += 1
            self._recovered = True
        if any(counts.values()):
            logger.info("recovered jobs: %s", counts)
        return counts

    # -- state changes ------------------------------------------------------------------
    def _finish(self, job_id: int, status: ExitStatus, *, restarted: bool = False) -> str:
        """Settle a job whose worker has ended, in one transaction; returns what happened:
        ``finished`` (an end state), ``requeued`` or ``lost``."""
        result = self._result(job_id)
        self._deadlines.pop(job_id, None)
        now, note, outcome = time.time(), "", "finished"
        with self.db.session() as s:
            row = s.get(Job, job_id, with_for_update=True)
            if row is None or row.state not in ACTIVE:
                return outcome
            pid = (row.handle or {}).get("pid")
            ok = result is not None and result.get("ok") is True
            deterministic = status.code == DETERMINISTIC_EXIT or bool(
                result and result.get("deterministic")
            )
            if ok:
                assert result is not None
                row.state, row.result, row.error = "succeeded", result, None
                row.run_id = result.get("run_id") if isinstance(result.get("run_id"), int) else None
            elif row.state == "cancelling":
                row.state = "cancelled"
            elif deterministic:
                row.state = "failed"
                row.error = str((result or {}).get("error") or f"failed ({status.describe()})")
            else:
                reason = (
                    f"the worker (pid {pid}) was gone when the server restarted"
                    if restarted and result is None
                    else str((result or {}).get("error") or _describe(status))
                )
                if row.attempts <= row.max_retries:
                    wait = 0.0 if restarted else self._backoff(row.attempts)
                    row.state, row.handle, row.not_before = "queued", {}, now + wait
                    row.error = f"attempt {row.attempts}: {reason}"
                    note = f"attempt {row.attempts} ended: {reason}; retrying in {wait:g}s"
                    outcome = "requeued"
                elif restarted and result is None:
                    row.state, outcome = "lost", "lost"
                    row.error = (
                        f"the worker (pid {pid}) disappeared while the server was down and no "
                        f"retries are left (max_retries={row.max_retries}); submit it again"
                    )
                else:
                    row.state = "failed"
                    row.error = (
                        f"{reason}; gave up after {row.attempts} attempts "
                        f"(max_retries={row.max_retries})"
                    )
            if row.error is not None:
                row.error = row.error[:4000]
            if row.state in TERMINAL:
                row.ended_at = now
                note = note or f"job {row.state}" + (f": {row.error}" if row.error else "")
        self._note(job_id, note)
        return outcome

    def _start_queued(self) -> None:
        now, cap = time.time(), self.capacity
        with self.db.session() as s:
            running = builtins.list(self._active(s))
            cpus = cap.cpus - sum(r.cpus for r in running)
            memory = cap.memory_mb - sum(r.memory_mb for r in running)
            busy = {g for r in running for g in (r.handle or {}).get("gpu_ids", [])}
            free_gpus = [g for g in range(cap.gpus) if g not in busy]
            queued = s.execute(
                select(Job.id, Job.cpus, Job.gpus, Job.memory_mb)
                .where(Job.state == "queued", or_(Job.not_before.is_(None), Job.not_before <= now))
                .order_by(Job.priority.desc(), Job.id.asc())
            ).all()
        for job_id, need_cpus, need_gpus, need_memory in queued:
            # strict order: a big job at the head is not starved by small ones behind it
            if need_cpus > cpus + 1e-9 or need_memory > memory or need_gpus > len(free_gpus):
                break
            gpu_ids, free_gpus = free_gpus[:need_gpus], free_gpus[need_gpus:]
            if self._launch(job_id, gpu_ids):
                cpus, memory = cpus - need_cpus, memory - need_memory

    def _launch(self, job_id: int, gpu_ids: builtins.list[int]) -> bool:
        workdir = self._workdir(job_id)
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "result.json").unlink(missing_ok=True)  # a former attempt's outcome
        with self.db.session() as s:
            row = s.get(Job, job_id, with_for_update=True)
            if row is None or row.state != "queued":
                return False
            attempt, now = row.attempts + 1, time.time()
            threads = max(1, math.ceil(row.cpus))
            env = {
                "LEPTON_HOME": str(self.home),
                "LEPTON_DATABASE_URL": self.db.url,
                "PYTHONUNBUFFERED": "1",
                "OMP_NUM_THREADS": str(threads),
                "LEPTON_NUM_THREADS": str(threads),
                "CUDA_VISIBLE_DEVICES": ",".join(str(g) for g in gpu_ids),
            }
            self._note(job_id, f"attempt {attempt} of {row.max_retries + 1} starting")
            try:
                handle = self.executor.start(job_id, dict(row.spec), workdir, env)
            except OSError as exc:
                row.state, row.ended_at = "failed", now
                row.error = f"the worker could not be started ({exc}); check the server's logs"
                return False
            row.state, row.attempts, row.started_at = "running", attempt, now
            row.executor = self.executor.name
            row.handle, row.not_before = {**handle, "gpu_ids": gpu_ids}, None
        return True

    # -- helpers ------------------------------------------------------------------------
    @staticmethod
    def _row(s: Any, job_id: int) -> Job:
        row = s.get(Job, job_id)
        if row is None:
            raise NotFoundError(f"no job with id {job_id}; see `lepton jobs list`")
        assert isinstance(row, Job)
        return row

    @staticmethod
    def _active(s: Any) -> Sequence[Job]:
        return s.scalars(select(Job).where(Job.state.in_(ACTIVE)).order_by(Job.id)).all()  # type: ignore[no-any-return]

    def _backoff(self, attempts: int) -> float:
        return float(min(self.backoff_s * 2 ** max(attempts - 1, 0), self.max_backoff_s))

    def _workdir(self, job_id: int) -> Path:
        return self.jobs_dir / str(int(job_id))

    def _result(self, job_id: int) -> dict[str, Any] | None:
        try:
            raw = json.loads((self._workdir(job_id) / "result.json").read_text())
        except (OSError, ValueError):
            return None
        return raw if isinstance(raw, dict) else None

    def _note(self, job_id: int, text: str) -> None:
        """Append a scheduler line to the job's log (what happened between attempts)."""
        if not text:
            return
        path = self._workdir(job_id) / "log.txt"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "a", encoding="utf-8") as log:
                log.write(f"[lepton {time.strftime('%H:%M:%S')}] {text}\n")
        except OSError as exc:
            logger.warning("cannot write to the log of job %s: %s", job_id, exc)


def _describe(status: ExitStatus) -> str:
    if status == ExitStatus():
        return "the worker ended without writing its result"
    return status.describe()


def _utf8_complete(data: bytes) -> int:
    """Length of ``data`` without a trailing, incomplete UTF-8 character."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte & 0xC0 != 0x80:  # not a continuation byte: the last character starts here
            size = 1 if byte < 0x80 else 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4
            return len(data) - back if size > back else len(data)
    return len(data)
