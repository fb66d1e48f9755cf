"""Reading jobs: one, a page, a live log, and a succeeded train job's output registered as
a model. Nothing here schedules or changes a job's state; :class:`JobQueries` is the base
of :class:`~lepton.platform.jobs._scheduler.JobManager`, which adds that.

Example:
    >>> text, offset, finished = manager.logs(7, offset=0)  # doctest: +SKIP
"""

from __future__ import annotations

import builtins
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from lepton import models as lp_models
from lepton.errors import ConflictError, JobError, NotFoundError
from lepton.platform.jobs._files import JobFolder
from lepton.platform.jobs._specs import STATES, TERMINAL, JobView
from lepton.registry import ModelVersion
from lepton.storage import Database
from lepton.storage.schema import JobRow

__all__ = ["JobQueries"]


@dataclass(frozen=True)
class _RunRef:
    id: int  # what register() reads of a run


class JobQueries:
    """Read access to the jobs of ``db`` and their folders under ``jobs_dir``."""

    db: Database
    jobs_dir: Path

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
                f"the output of job {job_id} is missing or damaged ({type(exc).__name__}); "
                "run the job again"
            ) from None
        model = lp_models.build(manifest["model"])
        model.load_state_dict(weights)
        return register(
            model.eval(), name, metrics=manifest.get("metrics"), dataset=dataset,
            run=_RunRef(view.run_id) if view.run_id is not None else None,
            description=f"Trained by job {job_id}; registered by {user}.", database=self.db,
        )  # fmt: skip

    @staticmethod
    def _row(s: Any, job_id: int) -> JobRow:
        row = s.get(JobRow, job_id)
        if row is None:
            raise NotFoundError(f"no job with id {job_id}; see `lepton jobs list`")
        assert isinstance(row, JobRow)
        return row

    def _folder(self, job_id: int) -> JobFolder:
        return JobFolder(self.jobs_dir, job_id)
