"""Jobs: the scheduler that runs them in CPU, GPU and memory slots with priorities,
retries and resume.

A job is a typed spec (:class:`TrainJob`, :class:`EvaluateJob`), never a shell string.
Each attempt runs in a worker process, ``python -m lepton.platform.jobs._worker JOB_ID``, which
reads the spec from the database and keeps everything in the job's folder
(:mod:`lepton.platform.jobs._files`: log, ``result.json``, checkpoints, output). The specs
live in :mod:`lepton.platform.jobs._specs`, the executor contract and the local executor in
:mod:`lepton.platform.jobs._executor`; this module re-exports them.

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
import logging
import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import func, or_, select

from lepton import models as lp_models
from lepton.errors import ConflictError, JobError, NotFoundError
from lepton.platform.jobs._executor import Capacity, Executor, ExitStatus, LocalExecutor
from lepton.platform.jobs._files import JobFolder
from lepton.platform.jobs._specs import (
    ACTIVE,
    DETERMINISTIC_EXIT,
    STATES,
    TERMINAL,
    EvaluateJob,
    JobRequest,
    JobSpec,
    JobState,
    JobView,
    TrainJob,
)
from lepton.registry import ModelVersion
from lepton.storage import Database
from lepton.storage.schema import JobRow

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

logger = logging.getLogger("lepton.platform.jobs")


@dataclass(frozen=True)
class _RunRef:
    id: int  # what register() reads of a run


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
        memory_check_s: How often a running worker's memory is measured; one that uses
            more than its job's ``memory_mb`` is killed and the job fails (no retry:
            it would use as much again). Its peak is written to the job's log.
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
        memory_check_s: float = 1.0,
    ) -> None:
        self.db = db
        self.home = Path(home)
        self.jobs_dir = self.home / "jobs"
        self.executor: Executor = executor if executor is not None else LocalExecutor()
        self.capacity = capacity if capacity is not None else Capacity.detect()
        self.grace_s, self.backoff_s, self.max_backoff_s = grace_s, backoff_s, max_backoff_s
        self.tick_s, self.memory_check_s = tick_s, memory_check_s
        self._lock = threading.RLock()
        self._deadlines: dict[int, float] = {}  # cancelling job -> when SIGKILL is due
        self._peak_mb: dict[int, float] = {}  # running job -> the most memory it used
        self._over_memory: dict[int, str] = {}  # job killed for its memory -> why
        self._memory_checked = 0.0
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
            row = JobRow(
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
        where = [JobRow.state == state] if state is not None else []
        with self.db.session() as s:
            total = s.scalar(select(func.count()).select_from(JobRow).where(*where)) or 0
            rows = s.scalars(
                select(JobRow).where(*where).order_by(JobRow.id.desc()).offset(offset).limit(limit)
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
                self._folder(job_id).note(f"cancelled by {user}: {how}")
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
        try:
            chunk = self._folder(job_id).read_log(offset, limit)
        except OSError as exc:
            raise JobError(f"cannot read the log of job {job_id} ({exc.strerror})") from None
        if chunk is None:
            return "", offset, ended
        text, end, size = chunk
        return text, end, ended and end >= size

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
        from lepton.registry import register

        try:
            manifest, dataset, weights = self._folder(job_id).output()
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
                active = [
                    (r.id, r.state, dict(r.handle or {}), r.memory_mb) for r in self._active(s)
                ]
            now = time.time()
            measure = now - self._memory_checked >= self.memory_check_s
            if measure:
                self._memory_checked = now
            for job_id, state, handle, reserved in active:
                status = self.executor.poll(handle)
                if status is not None:
                    self._finish(job_id, status)
                elif measure and state == "running":
                    self._check_memory(job_id, handle, reserved)
                elif state == "cancelling":
                    due = self._deadlines.setdefault(job_id, now + self.grace_s)
                    if now >= due:
                        self._folder(job_id).note(
                            f"still running {self.grace_s:g}s after SIGTERM: SIGKILL"
                        )
                        self.executor.cancel(handle, force=True)
                        self._deadlines[job_id] = math.inf
            self._start_queued()

    def _check_memory(self, job_id: int, handle: dict[str, Any], reserved: int) -> None:
        used = self.executor.memory_mb(handle)
        if used is None:
            return
        self._peak_mb[job_id] = max(used, self._peak_mb.get(job_id, 0.0))
        if used <= reserved or job_id in self._over_memory:
            return
        why = (
            f"the worker used {used:,.0f} MiB, more than the {reserved:,} MiB the job "
            f"reserved (memory_mb): stopped; submit it again with a larger memory_mb"
        )
        self._over_memory[job_id] = why
        self._folder(job_id).note(why)
        self.executor.cancel(handle, force=True)

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
        result = self._folder(job_id).result()
        self._deadlines.pop(job_id, None)
        over_memory = self._over_memory.pop(job_id, None)
        peak = self._peak_mb.pop(job_id, None)
        if peak is not None:
            self._folder(job_id).note(f"peak memory {peak:,.0f} MiB")
        now, note, outcome = time.time(), "", "finished"
        with self.db.session() as s:
            row = s.get(JobRow, job_id, with_for_update=True)
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
            elif over_memory is not None:
                row.state, row.error = "failed", over_memory
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
        self._folder(job_id).note(note)
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
                select(JobRow.id, JobRow.cpus, JobRow.gpus, JobRow.memory_mb)
                .where(
                    JobRow.state == "queued",
                    or_(JobRow.not_before.is_(None), JobRow.not_before <= now),
                )
                .order_by(JobRow.priority.desc(), JobRow.id.asc())
            ).all()
        for job_id, need_cpus, need_gpus, need_memory in queued:
            # strict order: a big job at the head is not starved by small ones behind it
            if need_cpus > cpus + 1e-9 or need_memory > memory or need_gpus > len(free_gpus):
                break
            gpu_ids, free_gpus = free_gpus[:need_gpus], free_gpus[need_gpus:]
            if self._launch(job_id, gpu_ids):
                cpus, memory = cpus - need_cpus, memory - need_memory

    def _launch(self, job_id: int, gpu_ids: builtins.list[int]) -> bool:
        folder = self._folder(job_id)
        folder.new_attempt()
        with self.db.session() as s:
            row = s.get(JobRow, job_id, with_for_update=True)
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
            folder.note(f"attempt {attempt} of {row.max_retries + 1} starting")
            try:
                handle = self.executor.start(job_id, dict(row.spec), folder.path, env)
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
    def _row(s: Any, job_id: int) -> JobRow:
        row = s.get(JobRow, job_id)
        if row is None:
            raise NotFoundError(f"no job with id {job_id}; see `lepton jobs list`")
        assert isinstance(row, JobRow)
        return row

    @staticmethod
    def _active(s: Any) -> Sequence[JobRow]:
        return s.scalars(select(JobRow).where(JobRow.state.in_(ACTIVE)).order_by(JobRow.id)).all()  # type: ignore[no-any-return]

    def _backoff(self, attempts: int) -> float:
        return float(min(self.backoff_s * 2 ** max(attempts - 1, 0), self.max_backoff_s))

    def _folder(self, job_id: int) -> JobFolder:
        return JobFolder(self.jobs_dir, job_id)


def _describe(status: ExitStatus) -> str:
    if status == ExitStatus():
        return "the worker ended without writing its result"
    return status.describe()
