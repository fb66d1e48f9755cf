"""Jobs: the scheduler that runs them in CPU, GPU and memory slots with priorities,
retries and resume, behind bounds on the queue.

A job is a typed spec (:class:`~lepton.platform.jobs._specs.TrainJob`,
:class:`~lepton.platform.jobs._specs.EvaluateJob`), never a shell string. Each attempt
runs in a worker process, ``python -m lepton.platform.jobs._worker JOB_ID``, which reads
the spec from the database and keeps everything in the job's folder
(:mod:`lepton.platform.jobs._files`). This module does what follows from a job's events:
it starts workers while slots are free, watches their memory, signals cancelled ones,
and settles ended ones. The events and the states they lead to are
:mod:`lepton.platform.jobs._states`; which event happened is
:mod:`lepton.platform.jobs._outcomes`; reading jobs is
:mod:`lepton.platform.jobs._queries`; the queue's bounds are
:mod:`lepton.platform.jobs._quotas`.

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
from pathlib import Path
from typing import Any

from sqlalchemy import or_, select

from lepton.errors import JobError
from lepton.platform.jobs._executor import Capacity, Executor, ExitStatus, LocalExecutor
from lepton.platform.jobs._outcomes import Backoff, decide_cancel, decide_exit
from lepton.platform.jobs._queries import JobQueries
from lepton.platform.jobs._quotas import QueueQuota
from lepton.platform.jobs._specs import ACTIVE, JobRequest, JobView
from lepton.platform.jobs._states import Change, transition
from lepton.storage import Database
from lepton.storage.schema import JobRow

__all__ = ["JobManager"]

logger = logging.getLogger("lepton.platform.jobs")

# How recover() counts what it settled, by event; any other event counts as "finished".
_RECOVERED_AS = {"crashed_retryable": "requeued", "process_lost": "lost"}
_ADOPTED = Change("adopted", note="a restarted server adopted the worker")


class JobManager(JobQueries):
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
        quota: Bounds on queued jobs (default: :meth:`QueueQuota.from_settings`).
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
        quota: QueueQuota | None = None,
    ) -> None:
        self.db = db
        self.home = Path(home)
        self.jobs_dir = self.home / "jobs"
        self.executor: Executor = executor if executor is not None else LocalExecutor()
        self.capacity = capacity if capacity is not None else Capacity.detect()
        self.quota = quota if quota is not None else QueueQuota.from_settings()
        self.grace_s, self.backoff = grace_s, Backoff(backoff_s, max_backoff_s)
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
            QuotaExceededError: ``user``, or everyone together, has as many jobs queued
                as :attr:`quota` allows.
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
            self.quota.add(s, row)
            view = JobView.from_row(row)
        self._wake.set()
        return view

    def cancel(self, job_id: int, user: str) -> JobView:
        """Cancel a job: a queued one at once, a running one with SIGTERM, then SIGKILL
        after ``grace_s`` (cancelling it again kills it at once).

        Raises:
            ConflictError: The job has already ended.
            NotFoundError: There is no such job.
        """
        with self._lock:
            applied = transition(
                self.db, self._folder(job_id), job_id,
                lambda row: decide_cancel(row, user, self.grace_s),
            )  # fmt: skip
            if applied is not None and applied.after == "cancelling":
                force = applied.before == "cancelling"
                self.executor.cancel(applied.handle, force=force)
                self._deadlines[job_id] = time.time() + (0 if force else self.grace_s)
        return self.get(job_id)

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
                    self._settle(job_id, status)
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
                    transition(self.db, self._folder(job_id), job_id, lambda _: _ADOPTED)
                    if state == "cancelling":  # the grace period starts again
                        self.executor.cancel(handle, force=False)
                        self._deadlines[job_id] = time.time() + self.grace_s
                    continue
                counts[self._settle(job_id, ExitStatus(), restarted=True)] += 1
            self._recovered = True
        if any(counts.values()):
            logger.info("recovered jobs: %s", counts)
        return counts

    # -- what follows from an event ---------------------------------------------------
    def _settle(self, job_id: int, status: ExitStatus, *, restarted: bool = False) -> str:
        """Apply the event of a job whose worker has ended and forget what was kept about
        its worker; returns how :meth:`recover` counts it."""
        folder = self._folder(job_id)
        result = folder.result()
        self._deadlines.pop(job_id, None)
        over_memory = self._over_memory.pop(job_id, None)
        peak = self._peak_mb.pop(job_id, None)
        if peak is not None:
            # rounded up: a peak of 200.3 over a 200 MiB slot must not read "200"
            folder.note(f"peak memory {math.ceil(peak):,} MiB")

        def decide(row: JobRow) -> Change | None:
            if row.state not in ACTIVE:
                return None
            return decide_exit(
                row, status, result, backoff=self.backoff, over_memory=over_memory,
                restarted=restarted,
            )  # fmt: skip

        applied = transition(self.db, folder, job_id, decide)
        return _RECOVERED_AS.get(applied.event, "finished") if applied else "finished"

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

        def start_worker(row: JobRow) -> Change | None:
            if row.state != "queued":
                return None
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
                share = Capacity(cpus=row.cpus, gpus=row.gpus, memory_mb=row.memory_mb)
                handle = self.executor.start(job_id, dict(row.spec), folder.path, env, share)
            except OSError as exc:
                why = f"the worker could not be started ({exc}); check the server's logs"
                return Change("start_failed", {"error": why})
            return Change(
                "started",
                {
                    "attempts": attempt, "started_at": now, "executor": self.executor.name,
                    "handle": {**handle, "gpu_ids": gpu_ids}, "not_before": None,
                },
            )  # fmt: skip

        applied = transition(self.db, folder, job_id, start_worker)
        return applied is not None and applied.after == "running"

    # -- helpers ------------------------------------------------------------------------
    @staticmethod
    def _active(s: Any) -> Sequence[JobRow]:
        return s.scalars(select(JobRow).where(JobRow.state.in_(ACTIVE)).order_by(JobRow.id)).all()  # type: ignore[no-any-return]
