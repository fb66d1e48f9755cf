"""A ``recommend`` job through a real scheduler: the real worker process
(``python -m lepton.platform.jobs._worker``) trains on real MovieLens ratings, logs the
test metrics to the job's tracking run and registers the recommender."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import lepton as lp
from helpers import one_slot_jobs, wait_for_job
from lepton.errors import DataSourceMissingError
from lepton.platform.jobs._specs import TERMINAL, JobRequest, RecommendJob
from lepton.storage import Database
from lepton.tracking import get_run

pytestmark = pytest.mark.integration


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Iterator[Database]:
    try:
        lp.data.load("movielens", split="all")
    except DataSourceMissingError as exc:
        pytest.skip(f"MovieLens is not unpacked on this machine: {exc.message}")
    database = Database(f"sqlite:///{tmp_path / 'jobs.db'}")
    database.upgrade()
    yield database
    database.dispose()


def test_a_recommend_job_trains_scores_and_registers(sqlite_db: Database) -> None:
    manager = one_slot_jobs(sqlite_db)
    spec = RecommendJob.model_validate(
        {"kind": "recommend", "users": 60, "factors": 8, "epochs": 3, "split": "temporal",
         "register": "job-movies"}
    )  # fmt: skip
    job = manager.submit(JobRequest(spec=spec, memory_mb=4096), "alice")
    view = wait_for_job(manager, job.id, lambda v: v.state in TERMINAL, timeout=180)
    log = (manager.jobs_dir / str(job.id) / "log.txt").read_text()
    assert view.state == "succeeded", log
    result = view.result
    assert result is not None
    assert result["kind"] == "recommend"
    assert result["registered"] == "job-movies:1"
    assert result["users"] == 60
    assert len(result["losses"]) == 3
    assert re.search(r"epoch 3/3: loss \d+\.\d+", log)
    assert "registered as job-movies:1" in log
    metrics = result["metrics"]
    assert 0.5 < metrics["rmse"] < 1.5  # ratings are 0.5-5: a model, not noise
    assert 0.0 <= metrics["ndcg@10"] <= 1.0
    run = get_run(view.run_id, database=sqlite_db)
    assert run.state == "finished"
    assert run.metrics["test_rmse"] == pytest.approx(metrics["rmse"])
    assert run.params["split"] == "temporal"

    # the registered version is the model the job measured: its test RMSE again
    rec = lp.recommend.load("job-movies:1", database=sqlite_db)
    ratings = lp.data.load("movielens", split="all")
    first = np.unique(ratings.user)[:60]
    _, test = ratings.take(np.isin(ratings.user, first)).temporal_split(0.2)
    assert rec.score(test)["rmse"] == pytest.approx(metrics["rmse"], abs=1e-6)
    version = lp.registry.resolve("job-movies:1", database=sqlite_db)
    assert version.manifest["dataset"]["name"] == "movielens"
    assert version.run_id == view.run_id
