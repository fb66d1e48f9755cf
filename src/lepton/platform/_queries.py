"""Read-only views across nouns that the REST API and the dashboard share: the overview's
counts, the jobs of a run, and the deployments serving a version. Routes and pages call
these instead of reading tables, so both answer from one query.

Example:
    >>> overview(platform).runs  # doctest: +SKIP
    12
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

from sqlalchemy import func, select

from lepton import data as lp_data
from lepton import registry, tracking
from lepton.platform._state import Platform
from lepton.platform.deployments import DeploymentManager
from lepton.platform.deployments._specs import DeploymentView
from lepton.platform.jobs._specs import JobState, JobView
from lepton.storage import Database
from lepton.storage.schema import JobRow

__all__ = ["Overview", "deployments_of", "jobs_by_state", "jobs_of_run", "overview"]


@dataclass(frozen=True)
class Overview:
    """How much of everything there is (the dashboard's front page)."""

    datasets_available: int
    datasets_total: int
    runs: int
    models: int
    versions: int  # ready versions, of all models
    jobs_by_state: dict[JobState, int]
    job_count: int
    deployment_count: int
    deployments_ready: int
    recent_jobs: list[JobView]


def overview(p: Platform, *, recent_jobs: int = 8) -> Overview:
    """Counts of datasets, runs, models, jobs and deployments, and the newest jobs."""
    datasets = lp_data.list_datasets()
    models = registry.list_models(database=p.db)
    deployments, deployment_count = p.deployments.list(0, 10_000)
    recent, job_count = p.jobs.list(offset=0, limit=recent_jobs)
    return Overview(
        datasets_available=sum(1 for d in datasets if d.locate() is not None),
        datasets_total=len(datasets),
        runs=tracking.count_runs(database=p.db),
        models=len(models),
        versions=sum(cast(int, m["versions"]) for m in models),
        jobs_by_state=jobs_by_state(p.db),
        job_count=job_count,
        deployment_count=deployment_count,
        deployments_ready=sum(1 for d in deployments if d.state == "ready"),
        recent_jobs=recent,
    )


def jobs_by_state(db: Database) -> dict[JobState, int]:
    """How many jobs are in each state (states without any are left out)."""
    with db.session() as s:
        rows = s.execute(select(JobRow.state, func.count()).group_by(JobRow.state)).all()
    return {cast(JobState, state): int(count) for state, count in rows}


def jobs_of_run(db: Database, run_id: int | None) -> list[int]:
    """Ids of the jobs that made run ``run_id``, oldest first (none for ``None``)."""
    if run_id is None:
        return []
    with db.session() as s:
        return list(s.scalars(select(JobRow.id).where(JobRow.run_id == run_id).order_by(JobRow.id)))


def deployments_of(manager: DeploymentManager, name: str, version: int) -> list[DeploymentView]:
    """The deployments serving version ``version`` of model ``name``."""
    found, _ = manager.list(0, 10_000)
    return [d for d in found if d.model_name == name and d.version == version]
