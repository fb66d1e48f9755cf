"""Bounds on the queue: how many jobs may wait to start, per user and in all, checked in
the same transaction as the insert so that concurrent submissions cannot overshoot.

Only submissions are bounded: a retry going back to ``queued`` is never refused.

Example:
    >>> quota = QueueQuota(per_user=100, total=1000)
    >>> with db.session() as s:  # doctest: +SKIP
    ...     quota.add(s, row)  # raises QuotaExceededError, rolling the insert back
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from lepton.config import get_settings
from lepton.errors import ConfigError, QuotaExceededError
from lepton.storage.schema import JobRow

__all__ = ["QueueQuota"]

# The key of PostgreSQL's transaction-level advisory lock that serialises submissions
# ("lepjobs" in ASCII): held from the count to the commit, so two submissions cannot both
# see room for one more job.
_SUBMIT_LOCK = 0x6C65706A6F6273


@dataclass(frozen=True)
class QueueQuota:
    """The most jobs that may wait to start (``queued``): per user and in all.

    Args:
        per_user: For one user (``LEPTON_MAX_QUEUED_JOBS_PER_USER``, default 100).
        total: For all users together (``LEPTON_MAX_QUEUED_JOBS``, default 1,000).
        retry_after_s: What a refused client is told to wait (``Retry-After``).
    """

    per_user: int
    total: int
    retry_after_s: float = 60.0

    def __post_init__(self) -> None:
        if self.per_user < 1 or self.total < 1:
            raise ConfigError(
                f"queue quotas must be at least 1, got per_user={self.per_user}, "
                f"total={self.total}; raise them"
            )

    @classmethod
    def from_settings(cls) -> QueueQuota:
        """The bounds of the ``LEPTON_MAX_QUEUED_JOBS*`` settings."""
        settings = get_settings()
        return cls(per_user=settings.max_queued_jobs_per_user, total=settings.max_queued_jobs)

    def add(self, s: Session, row: JobRow) -> None:
        """Insert a queued job in ``s``'s transaction, unless the queue is full.

        On SQLite the insert comes first: it takes the database's write lock, held until
        the commit, so the count after it is exact. On PostgreSQL an advisory lock comes
        first, since concurrent inserts do not block each other there.

        Raises:
            QuotaExceededError: The user, or everyone together, has as many jobs queued
                as allowed; raised before the commit, so the insert is rolled back.
        """
        if s.get_bind().dialect.name == "postgresql":
            s.execute(select(func.pg_advisory_xact_lock(_SUBMIT_LOCK)))
        s.add(row)
        s.flush()
        mine = case((JobRow.created_by == row.created_by, 1), else_=0)
        total, by_user = s.execute(
            select(func.count(), func.coalesce(func.sum(mine), 0)).where(JobRow.state == "queued")
        ).one()
        user = row.created_by
        if by_user > self.per_user:  # the new row is counted too
            raise QuotaExceededError(
                f"{user} already has {by_user - 1} jobs queued, the most one user may have "
                f"(LEPTON_MAX_QUEUED_JOBS_PER_USER={self.per_user}); wait for some to start, or "
                f"cancel queued jobs you no longer need (`lepton jobs cancel ID`), then submit "
                f"again",
                retry_after=self.retry_after_s,
            )
        if total > self.total:
            raise QuotaExceededError(
                f"the server already has {total - 1} jobs queued, the most it accepts "
                f"(LEPTON_MAX_QUEUED_JOBS={self.total}); wait for some to start, or cancel "
                f"queued jobs you no longer need (`lepton jobs cancel ID`), then submit again",
                retry_after=self.retry_after_s,
            )
