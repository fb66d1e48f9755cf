"""Jobs for real: worker subprocesses, a real database, real (tiny) MNIST training.

Scheduling, cancel and recovery are also driven with small Python scripts as workers
(``LocalExecutor(worker=...)``), real processes that start in milliseconds; the train
and evaluate paths run the real worker, ``python -m lepton.platform.jobs._worker``.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import optuna
import pytest
import torch
from safetensors.torch import load_file
from servers import kill_leftovers, ok, start_platform, stop_platform

import lepton as lp
from lepton.config import get_settings
from lepton.errors import ConflictError, JobError, NotFoundError, QuotaExceededError
from lepton.platform.jobs._executor import Capacity, Executor, LocalExecutor
from lepton.platform.jobs._quotas import QueueQuota
from lepton.platform.jobs._scheduler import JobManager
from lepton.platform.jobs._specs import (
    TERMINAL,
    CompressJob,
    EvaluateJob,
    FederatedJob,
    JobRequest,
    JobView,
    TrainJob,
    TuneJob,
)
from lepton.storage import Database
from lepton.tracking import get_run
from lepton.tune._optuna import storage_for

pytestmark = pytest.mark.integration

ONE_SLOT = Capacity(cpus=1, gpus=0, memory_mb=4096)

PRELUDE = """\
import json, os, signal, sys, time

def finish(**result):
    with open("result.json.tmp", "w") as f:
        json.dump({"ok": True, **result}, f)
    os.replace("result.json.tmp", "result.json")

print("worker of job", sys.argv[1], "pid", os.getpid(), flush=True)
"""


def script_executor(tmp_path: Path, body: str) -> LocalExecutor:
    """A LocalExecutor whose worker is a small Python script (a real process)."""
    path = tmp_path / f"worker_{abs(hash(body))}.py"
    path.write_text(PRELUDE + textwrap.dedent(body))
    return LocalExecutor(worker=(sys.executable, str(path)))


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Iterator[Database]:
    database = Database(f"sqlite:///{tmp_path / 'jobs.db'}")
    database.upgrade()
    yield database
    database.dispose()


def manager_for(db: Database, executor: Executor | None = None, **options: object) -> JobManager:
    options.setdefault("capacity", ONE_SLOT)
    options.setdefault("backoff_s", 0.05)
    return JobManager(db, get_settings().home, executor, **options)  # type: ignore[arg-type]


def wait_for(
    manager: JobManager,
    job_id: int,
    done: Callable[[JobView], bool],
    timeout: float = 60.0,
    *,
    tick: bool = True,
) -> JobView:
    deadline = time.monotonic() + timeout
    while True:
        if tick:
            manager.tick()
        view = manager.get(job_id)
        if done(view):
            return view
        if time.monotonic() > deadline:
            log = manager.logs(job_id)[0]
            raise AssertionError(f"job {job_id} is {view.state} after {timeout}s:\n{log}")
        time.sleep(0.05)


def ended(view: JobView) -> bool:
    return view.state in ("succeeded", "failed", "cancelled", "lost")


def submit(
    manager: JobManager,
    spec: TrainJob | EvaluateJob | TuneJob | CompressJob | FederatedJob,
    **options: object,
) -> JobView:
    return manager.submit(JobRequest(spec=spec, **options), "alice")  # type: ignore[arg-type]


def log_of(manager: JobManager, job_id: int) -> str:
    return (manager.jobs_dir / str(job_id) / "log.txt").read_text()


def pid_gone(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat[stat.rindex(")") + 2] in "ZX"


# -- memory (the executor contract is tests/integration/test_executor_contract.py) -------
GROWER = """
child = os.fork()  # a child that touches memory of its own: the whole group is counted
block = bytearray(int(sys.argv[2] if len(sys.argv) > 2 else 150) * 2**20)
for i in range(0, len(block), 4096):
    block[i] = 1
open("grown.txt" if child else "child-grown.txt", "w").close()
time.sleep(60)
"""


def test_a_job_over_its_memory_is_stopped_and_not_retried(sqlite_db: Database, tmp_path: Path):
    manager = manager_for(sqlite_db, script_executor(tmp_path, GROWER), memory_check_s=0.1)
    job = submit(manager, TrainJob(model="mlp"), memory_mb=200, max_retries=2)
    view = wait_for(manager, job.id, ended, timeout=30)
    log = log_of(manager, job.id)
    assert view.state == "failed", log
    assert view.attempts == 1, "a retry would use as much memory again"
    assert view.error is not None
    assert "more than the 200 MiB the job reserved (memory_mb)" in view.error
    assert "submit it again with a larger memory_mb" in view.error
    peak = re.search(r"peak memory ([\d,]+) MiB", log)
    assert peak is not None, log
    assert int(peak.group(1).replace(",", "")) > 200
    small = submit(manager, TrainJob(model="mlp"), memory_mb=2048)  # the same, within its slot
    view = wait_for(manager, small.id, lambda v: v.state == "running", timeout=30)
    while not (manager.jobs_dir / str(small.id) / "grown.txt").exists():
        manager.tick()
        time.sleep(0.05)
    for _ in range(10):
        manager.tick()
        time.sleep(0.1)
    assert manager.get(small.id).state == "running"
    manager.cancel(small.id, "alice")
    assert wait_for(manager, small.id, ended).state == "cancelled"


# -- scheduling -------------------------------------------------------------------------
def test_priorities_order_the_starts_when_one_job_fits(db: Database, tmp_path: Path):
    manager = manager_for(db, script_executor(tmp_path, "time.sleep(0.1); finish()"))
    spec = EvaluateJob(model_ref="m")
    low = submit(manager, spec, priority=-5)
    mid = submit(manager, spec)
    high = submit(manager, spec, priority=10)
    high2 = submit(manager, spec, priority=10)
    deadline = time.monotonic() + 30
    while manager.list(state="succeeded")[1] < 4:
        manager.tick()
        assert len(manager.list(state="running")[0]) <= 1
        assert time.monotonic() < deadline
        time.sleep(0.02)
    views = [manager.get(j.id) for j in (high, high2, mid, low)]
    starts = [v.started_at for v in views]
    assert starts == sorted(starts), "priority first, then the order of submission"
    assert all(v.attempts == 1 and v.result == {"ok": True} for v in views)
    jobs, total = manager.list(offset=1, limit=2)
    assert total == 4
    assert [j.id for j in jobs] == [high.id, mid.id]  # newest first


def test_jobs_share_cpus_and_get_their_own_gpus(sqlite_db: Database, tmp_path: Path):
    body = 'finish(gpus=os.environ["CUDA_VISIBLE_DEVICES"], threads=os.environ["OMP_NUM_THREADS"])'
    manager = manager_for(
        sqlite_db,
        script_executor(tmp_path, f"time.sleep(1.0); {body}"),
        capacity=Capacity(cpus=2, gpus=2, memory_mb=8192),
    )
    spec = EvaluateJob(model_ref="m")
    a = submit(manager, spec, gpus=1, cpus=0.5)
    b = submit(manager, spec, gpus=1, cpus=1.5, memory_mb=4096)
    c = submit(manager, spec, gpus=1, cpus=0.5)
    manager.tick()
    states = [manager.get(j.id).state for j in (a, b, c)]
    assert states == ["running", "running", "queued"], "no third GPU, no CPU left"
    views = [wait_for(manager, j.id, ended) for j in (a, b, c)]
    assert {views[0].result["gpus"], views[1].result["gpus"]} == {"0", "1"}  # type: ignore[index]
    assert views[1].result["threads"] == "2"  # type: ignore[index]
    assert views[2].started_at >= min(views[0].ended_at, views[1].ended_at)  # type: ignore[operator]


def test_a_job_that_can_never_fit_is_refused(sqlite_db: Database):
    manager = manager_for(sqlite_db, capacity=Capacity(cpus=2, gpus=0, memory_mb=1024))
    spec = TrainJob(model="mlp")
    with pytest.raises(JobError, match=r"cpus=4 \(this server has 2\)"):
        submit(manager, spec, cpus=4)
    with pytest.raises(JobError, match=r"gpus=1 \(this server has 0\)"):
        submit(manager, spec, gpus=1)
    with pytest.raises(JobError, match=r"memory_mb=2048 \(this server has 1024\)"):
        submit(manager, spec)
    assert manager.list() == ([], 0)
    assert submit(manager, spec, cpus=2, memory_mb=1024).state == "queued"


def test_get_list_and_register_refuse_what_does_not_exist_or_fit(sqlite_db: Database):
    manager = manager_for(sqlite_db)
    with pytest.raises(NotFoundError, match="no job with id 99"):
        manager.get(99)
    with pytest.raises(JobError, match="state must be one of"):
        manager.list(state="done")
    train = submit(manager, TrainJob(model="mlp"))
    evaluate = submit(manager, EvaluateJob(model_ref="m"))
    with pytest.raises(ConflictError, match="is queued; register its model once it has"):
        manager.register_output(train.id, "x", "alice")
    with pytest.raises(ConflictError, match="only train jobs make models"):
        manager.register_output(evaluate.id, "x", "alice")


def test_logs_are_read_in_chunks_and_only_inside_the_job_folder(
    sqlite_db: Database, tmp_path: Path
):
    manager = manager_for(sqlite_db)
    job = submit(manager, TrainJob(model="mlp"))
    assert manager.logs(job.id) == ("", 0, False)
    folder = manager.jobs_dir / str(job.id)
    folder.mkdir(parents=True)
    (folder / "log.txt").write_text("épochs ✓\n")
    text, offset, finished = manager.logs(job.id, limit=2)  # 'é' is 2 bytes
    assert (text, offset, finished) == ("é", 2, False)
    text, offset, _ = manager.logs(job.id, offset=offset, limit=7)  # stops before '✓'
    assert (text, offset) == ("pochs ", 8)
    assert manager.logs(job.id, offset=offset) == ("✓\n", 12, False)
    assert manager.logs(job.id, offset=1000) == ("", 12, False)
    manager.cancel(job.id, "alice")
    assert manager.logs(job.id, offset=12)[2] is True, "finished: ended and all read"
    with pytest.raises(JobError, match="offset >= 0"):
        manager.logs(job.id, offset=-1)
    secret = tmp_path / "secret.txt"
    secret.write_text("password")
    (folder / "log.txt").unlink()
    (folder / "log.txt").symlink_to(secret)
    with pytest.raises(JobError, match="cannot read the log"):
        manager.logs(job.id)


# -- cancel -----------------------------------------------------------------------------
def test_cancel_a_queued_and_a_running_job(db: Database, tmp_path: Path):
    manager = manager_for(db, script_executor(tmp_path, "time.sleep(60)"))
    running = submit(manager, EvaluateJob(model_ref="m"))
    queued = submit(manager, EvaluateJob(model_ref="m"))
    manager.tick()
    assert manager.get(running.id).state == "running"
    cancelled = manager.cancel(queued.id, "bob")
    assert (cancelled.state, cancelled.attempts) == ("cancelled", 0)
    assert cancelled.error == "cancelled by bob before it started"
    assert cancelled.ended_at is not None
    assert manager.cancel(running.id, "bob").state == "cancelling"
    view = wait_for(manager, running.id, ended, timeout=10)
    assert view.state == "cancelled"
    assert manager.get(queued.id).started_at is None, "a cancelled job never starts"
    with pytest.raises(ConflictError, match="already ended"):
        manager.cancel(running.id, "bob")


def test_cancel_kills_a_worker_that_ignores_sigterm(sqlite_db: Database, tmp_path: Path):
    stubborn = 'signal.signal(signal.SIGTERM, signal.SIG_IGN); print("ready", flush=True)\n'
    manager = manager_for(
        sqlite_db, script_executor(tmp_path, stubborn + "time.sleep(60)"), grace_s=0.5
    )
    job = submit(manager, EvaluateJob(model_ref="m"))
    wait_for(manager, job.id, lambda v: "ready" in log_of(manager, job.id), timeout=10)
    pid = _pid(sqlite_db, job.id)
    asked = time.monotonic()
    manager.cancel(job.id, "bob")
    manager.tick()
    assert manager.get(job.id).state == "cancelling", "SIGTERM is ignored"
    view = wait_for(manager, job.id, ended, timeout=10)
    assert view.state == "cancelled"
    assert time.monotonic() - asked >= 0.5, "the grace period was given"
    assert pid_gone(pid)
    assert "SIGKILL" in log_of(manager, job.id)


def _pid(db: Database, job_id: int) -> int:
    from lepton.storage.schema import JobRow

    with db.session() as s:
        row = s.get(JobRow, job_id)
        assert row is not None
        return int(row.handle["pid"])


@pytest.mark.slow
def test_cancel_stops_a_training_worker_gracefully(sqlite_db: Database):
    manager = manager_for(sqlite_db, grace_s=30)
    job = submit(manager, TrainJob(model="mlp", epochs=1000, limit=256, val="none"))
    wait_for(manager, job.id, lambda v: "epoch   2/1000" in log_of(manager, job.id))
    run_id = manager.get(job.id).run_id
    assert run_id is not None, "the worker shows its tracking run while it runs"
    manager.cancel(job.id, "bob")
    view = wait_for(manager, job.id, ended, timeout=30)
    assert view.state == "cancelled"
    assert "stopped by SIGTERM" in log_of(manager, job.id)
    assert "after SIGTERM: SIGKILL" not in log_of(manager, job.id)
    assert get_run(run_id, database=sqlite_db).state == "killed"
    assert (manager.jobs_dir / str(job.id) / "checkpoints" / "latest.json").exists()


# -- success, failures and retries ------------------------------------------------------
@pytest.mark.slow
def test_a_train_job_succeeds_with_metrics_a_run_a_live_log_and_a_model(sqlite_db: Database):
    manager = manager_for(sqlite_db)
    spec = TrainJob(model="mlp", epochs=3, limit=512, register="job-mlp", seed=1)
    job = submit(manager, spec)
    assert job.state == "queued"
    path = manager.jobs_dir / str(job.id) / "log.txt"
    streamed, offset, sizes = "", 0, set()
    while True:
        manager.tick()
        text, offset, finished = manager.logs(job.id, offset=offset, limit=64)
        streamed += text
        if manager.get(job.id).state == "running":
            sizes.add(path.stat().st_size)
        if finished:
            break
        time.sleep(0.05)
    assert len(sizes) >= 3, f"the log grows while the job runs: sizes {sorted(sizes)}"
    log = log_of(manager, job.id)
    assert streamed == log, "reading by offsets returns the whole log, once"
    view = manager.get(job.id)
    assert view.state == "succeeded", log
    assert (view.attempts, view.error) == (1, None)
    assert "epoch   3/3" in log
    assert "registered as job-mlp:1" in log
    result = view.result
    assert result is not None
    assert result["epochs"] == 3
    assert result["resumed_from_epoch"] == 0
    assert result["metrics"]["accuracy"] > 0.3  # 512 images, 3 epochs: far above 10%
    assert view.run_id == result["run_id"]
    run = get_run(view.run_id, database=sqlite_db)
    assert run.state == "finished"
    assert run.metrics["test_accuracy"] == pytest.approx(result["metrics"]["accuracy"])
    assert result["registered"] == "job-mlp:1"

    version = manager.register_output(job.id, "job-mlp-again", "alice")
    assert version.ref == "job-mlp-again:1"
    assert version.run_id == view.run_id
    first = lp.registry.resolve("job-mlp:1", database=sqlite_db)
    assert version.manifest["dataset"] == first.manifest["dataset"], "same lineage"
    assert version.metrics == pytest.approx(result["metrics"])
    x = lp.data.load("mnist", split="test").features[:64].float()
    out = manager.jobs_dir / str(job.id) / "output"
    saved = lp.models.build(json.loads((out / "manifest.json").read_text())["model"])
    saved.load_state_dict(load_file(str(out / "model.safetensors")))
    with torch.no_grad():
        expected = saved.eval()(x)
        again = lp.load_model(version.ref, database=sqlite_db)(x)
        registered_by_job = lp.load_model("job-mlp:1", database=sqlite_db)(x)
    assert torch.equal(again, expected)
    assert torch.equal(registered_by_job, expected)


@pytest.mark.slow
def test_a_tune_job_runs_its_trials_in_two_workers_and_registers_the_best(sqlite_db: Database):
    manager = manager_for(sqlite_db, capacity=Capacity(cpus=2, gpus=0, memory_mb=8192))
    space = {
        "lr": {"type": "float", "low": 1e-4, "high": 0.05, "log": True},
        "hidden": {"type": "int", "low": 16, "high": 64, "log": True},
    }
    spec = TuneJob.model_validate(
        {"kind": "tune", "model": "mlp", "data": "digits", "space": space, "epochs": 2,
         "n_trials": 4, "workers": 2, "register": "tuned-digits", "limit": 720}
    )  # fmt: skip
    with pytest.raises(ValueError, match="ask for cpus >= 2"):
        JobRequest(spec=spec, cpus=1)
    job = submit(manager, spec, cpus=2)
    view = wait_for(manager, job.id, lambda v: v.state in TERMINAL, timeout=300)
    log = log_of(manager, job.id)
    assert view.state == "succeeded", log
    result = view.result
    assert result is not None
    assert result["study"] == f"job-{job.id}"  # a retry would resume this study
    assert result["complete"] + result["pruned"] >= 4
    assert result["registered"] == "tuned-digits:1"
    assert re.search(r"trial \d+ (complete|pruned) val_accuracy=0\.\d+ · best 0\.\d+", log)
    assert view.run_id == result["run_id"]
    trials = lp.tracking.list_runs(parent=result["run_id"], database=sqlite_db)
    assert len(trials) == result["trials"]
    study = optuna.load_study(study_name=result["study"], storage=storage_for(sqlite_db))
    assert len({t.user_attrs["lepton.pid"] for t in study.trials}) == 2  # two worker processes
    best = lp.tune.get_study(result["study"], database=sqlite_db)
    assert best.best_value == pytest.approx(result["best_value"])
    model = lp.load_model("tuned-digits:1", database=sqlite_db)
    digits = lp.data.load("digits", split="train").subset(slice(0, 720))
    val = digits.split(test_size=1 / 12, seed=0)[1]  # the recipe's holdout
    assert lp.evaluate(model, val)["accuracy"] == pytest.approx(result["best_value"], abs=1e-6)


def test_a_compress_job_quantizes_a_version_and_registers_its_int8_child(sqlite_db: Database):
    train = lp.data.load("digits", split="train")
    model = lp.models.MLP(in_features=64, num_classes=10, hidden=[256])
    lp.fit(model, train, epochs=3, seed=0, quiet=True)
    lp.register(model, "digits-mlp", dataset=train, database=sqlite_db)
    manager = manager_for(sqlite_db)
    spec = CompressJob.model_validate(
        {"kind": "compress", "model": "digits-mlp:1", "data": "digits", "quantize": "static",
         "calibration_size": 128}
    )  # fmt: skip
    job = submit(manager, spec)
    view = wait_for(manager, job.id, lambda v: v.state in TERMINAL, timeout=180)
    log = log_of(manager, job.id)
    assert view.state == "succeeded", log
    result = view.result
    assert result is not None
    assert (result["source"], result["registered"], result["format"]) == (
        "digits-mlp:1",
        "digits-mlp:2",
        "onnx",
    )
    assert "registered as digits-mlp:2" in log
    assert result["metrics"]["size_after"] < result["metrics"]["size_before"] / 2
    assert result["metrics"]["test_accuracy"] > result["metrics"]["test_accuracy_before"] - 0.02
    child = lp.registry.resolve("digits-mlp:2", database=sqlite_db)
    assert child.manifest["lineage"]["derived_from"] == "digits-mlp:1"
    assert child.manifest["lineage"]["recipe"]["quantize"] == "static"
    run = get_run(view.run_id, database=sqlite_db)
    assert run.state == "finished"
    assert run.metrics["smaller"] == pytest.approx(result["metrics"]["smaller"])
    test = lp.data.load("digits", split="test")
    int8 = lp.load_model("digits-mlp:2", database=sqlite_db)
    assert lp.evaluate(int8, test)["accuracy"] == pytest.approx(
        result["metrics"]["test_accuracy"], abs=1e-6
    )


@pytest.mark.slow
def test_a_federated_job_runs_its_rounds_and_registers_the_global_model(sqlite_db: Database):
    manager = manager_for(sqlite_db, capacity=Capacity(cpus=2, gpus=0, memory_mb=8192))
    spec = FederatedJob.model_validate(
        {"kind": "federated", "model": "mlp", "data": "digits", "clients": 3, "rounds": 2,
         "partition": "iid", "local_epochs": 2, "lr": 0.01, "register": "fed-digits"}
    )  # fmt: skip
    job = submit(manager, spec, cpus=2, memory_mb=8192)
    view = wait_for(manager, job.id, lambda v: v.state in TERMINAL, timeout=300)
    log = log_of(manager, job.id)
    assert view.state == "succeeded", log
    result = view.result
    assert result is not None
    assert [r["round"] for r in result["rounds"]] == [0, 1, 2]
    assert all(r["clients_replied"] == 3 for r in result["rounds"][1:]), result["rounds"]
    first, last = result["rounds"][0]["accuracy"], result["metrics"]["accuracy"]
    assert last > max(first + 0.3, 0.6), (first, last)  # training, not chance
    assert re.search(r"round 2/2: accuracy 0\.\d+ loss \d+\.\d+ · 3/3 clients replied", log)
    assert result["registered"] == "fed-digits:1"
    run = get_run(view.run_id, database=sqlite_db)
    assert run.state == "finished"
    model = lp.load_model("fed-digits:1", database=sqlite_db)
    test = lp.data.load("digits", split="test")
    assert lp.evaluate(model, test)["accuracy"] == pytest.approx(last, abs=1e-6)


def test_a_deterministic_failure_is_not_retried(db: Database):
    manager = manager_for(db)  # the worker reaches PostgreSQL as well as SQLite
    job = submit(manager, EvaluateJob(model_ref="no-such-model:1", data="iris"), max_retries=2)
    view = wait_for(manager, job.id, ended)
    assert view.state == "failed"
    assert view.attempts == 1, "a retry would fail the same way"
    assert view.error is not None
    assert "no ready model version matches 'no-such-model:1'" in view.error
    assert "[job] error (" in log_of(manager, job.id)


@pytest.mark.slow
def test_a_crashed_job_is_retried_and_resumes_from_its_checkpoint(sqlite_db: Database):
    manager = manager_for(sqlite_db, backoff_s=0.5)
    spec = TrainJob(model="mlp", epochs=12, limit=512, batch_size=16, val="none")
    job = submit(manager, spec, max_retries=1)
    latest = manager.jobs_dir / str(job.id) / "checkpoints" / "latest.json"
    deadline = time.monotonic() + 60
    while not latest.exists():
        manager.tick()
        assert manager.get(job.id).state in ("queued", "running")
        assert time.monotonic() < deadline
        time.sleep(0.01)
    os.kill(_pid(sqlite_db, job.id), signal.SIGKILL)  # as the OOM killer would
    view = wait_for(manager, job.id, lambda v: v.state != "running")
    assert view.state == "queued"
    assert view.error == "attempt 1: killed by SIGKILL (out of memory?)"
    assert view.not_before is not None
    assert view.not_before > time.time() - 0.2, "waits for its backoff"
    view = wait_for(manager, job.id, ended)
    log = log_of(manager, job.id)
    assert view.state == "succeeded", log
    assert view.attempts == 2
    assert view.result is not None
    resumed = view.result["resumed_from_epoch"]
    assert 1 <= resumed < 12
    assert f"resuming from the checkpoint of epoch {resumed}" in log
    assert f"resuming after epoch {resumed}" in log
    assert view.result["epochs"] == 12, "the history holds every epoch, before and after"
    assert log.count("epoch  12/12") == 1


# -- restarts ---------------------------------------------------------------------------
@pytest.mark.slow
def test_a_restarted_server_adopts_a_running_job(sqlite_db: Database):
    before = manager_for(sqlite_db)
    job = submit(before, TrainJob(model="mlp", epochs=6, limit=512, val="none"))
    wait_for(before, job.id, lambda v: "[job] train" in log_of(before, job.id))
    before.stop()  # the server goes away; its worker keeps running
    after = manager_for(sqlite_db, tick_s=0.05)
    assert after.recover() == {"adopted": 1, "finished": 0, "requeued": 0, "lost": 0}
    assert after.get(job.id).state == "running"
    after.start()  # the background thread finishes the job
    try:
        view = wait_for(after, job.id, ended, tick=False)
    finally:
        after.stop()
    assert view.state == "succeeded", log_of(after, job.id)
    assert view.attempts == 1, "adopted, not restarted"
    assert view.result is not None
    assert view.result["epochs"] == 6


def test_recover_settles_jobs_whose_worker_died_with_the_server(db: Database, tmp_path: Path):
    worker = """
    if os.path.exists(f"../quick-{sys.argv[1]}"):
        finish(note="done while down")
        sys.exit(0)
    time.sleep(60)
    """
    before = manager_for(
        db, script_executor(tmp_path, worker), capacity=Capacity(cpus=3, gpus=0, memory_mb=9000)
    )
    spec = EvaluateJob(model_ref="m")
    retry = submit(before, spec, max_retries=1)
    lost = submit(before, spec, max_retries=0)
    quick = submit(before, spec, max_retries=0)
    before.jobs_dir.mkdir(parents=True, exist_ok=True)
    (before.jobs_dir / f"quick-{quick.id}").touch()
    before.tick()
    pids = {j.id: _pid(db, j.id) for j in (retry, lost, quick)}
    deadline = time.monotonic() + 10
    while not (before.jobs_dir / str(quick.id) / "result.json").exists():
        assert time.monotonic() < deadline
        time.sleep(0.02)
    for pid in (pids[retry.id], pids[lost.id]):
        os.kill(pid, signal.SIGKILL)  # the machine rebooted, say
    for pid in pids.values():
        while not pid_gone(pid):
            assert time.monotonic() < deadline
            time.sleep(0.02)

    after = manager_for(db, script_executor(tmp_path, worker))
    assert after.recover() == {"adopted": 0, "finished": 1, "requeued": 1, "lost": 1}
    view = after.get(retry.id)
    assert (view.state, view.attempts) == ("queued", 1)
    assert f"pid {pids[retry.id]}) was gone when the server restarted" in log_of(after, retry.id)
    view = after.get(lost.id)
    assert view.state == "lost"
    assert view.error is not None
    assert "disappeared while the server was down" in view.error
    assert view.ended_at is not None
    view = after.get(quick.id)
    assert view.state == "succeeded"
    assert view.result == {"ok": True, "note": "done while down"}
    after.tick()
    assert after.get(retry.id).state == "running", "the retry starts at once"
    after.cancel(retry.id, "alice")
    after.cancel(retry.id, "alice")  # again: SIGKILL now
    assert wait_for(after, retry.id, ended, timeout=10).state == "cancelled"


# -- queue quotas -----------------------------------------------------------------------
def test_the_queue_is_bounded_per_user_and_in_all(db: Database, tmp_path: Path):
    manager = manager_for(
        db, script_executor(tmp_path, "finish()"), quota=QueueQuota(per_user=2, total=3)
    )
    spec = EvaluateJob(model_ref="m")
    first = submit(manager, spec)
    submit(manager, spec)
    with pytest.raises(
        QuotaExceededError,
        match=r"alice already has 2 jobs queued, the most one user may have "
        r"\(LEPTON_MAX_QUEUED_JOBS_PER_USER=2\); wait for some to start, or cancel",
    ) as refused:
        submit(manager, spec)
    assert (refused.value.status, refused.value.retry_after) == (429, 60.0)
    bob = manager.submit(JobRequest(spec=spec), "bob")  # alice's bound is not bob's
    with pytest.raises(
        QuotaExceededError,
        match=r"the server already has 3 jobs queued, .*\(LEPTON_MAX_QUEUED_JOBS=3\)",
    ):
        manager.submit(JobRequest(spec=spec), "carol")
    assert manager.list()[1] == 3, "a refused job leaves no record"
    manager.tick()
    assert manager.get(first.id).state != "queued", "started: only queued jobs count"
    submit(manager, spec)
    manager.cancel(bob.id, "bob")
    manager.submit(JobRequest(spec=spec), "carol")
    with pytest.raises(QuotaExceededError, match="the server already has 3 jobs queued"):
        manager.submit(JobRequest(spec=spec), "carol")


@pytest.mark.parametrize("bound", ["per_user", "total"])
def test_concurrent_submissions_never_overshoot_the_bound(db: Database, bound: str):
    quota = QueueQuota(per_user=5, total=1000) if bound == "per_user" else QueueQuota(1000, 5)
    manager = manager_for(db, quota=quota)
    start = threading.Barrier(6)
    accepted: list[int] = []
    refused: list[str] = []
    failures: list[BaseException] = []

    def client(n: int) -> None:
        user = "alice" if bound == "per_user" else f"user{n}"
        start.wait()
        for _ in range(3):
            try:
                accepted.append(
                    manager.submit(JobRequest(spec=EvaluateJob(model_ref="m")), user).id
                )
            except QuotaExceededError as exc:
                refused.append(exc.message)
            except BaseException as exc:  # reported below, in the test's thread
                failures.append(exc)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert failures == []
    assert (len(accepted), len(refused)) == (5, 13)
    assert manager.list(state="queued")[1] == 5
    assert all("already has 5 jobs queued" in message for message in refused)


@pytest.fixture
def platform_home() -> Iterator[Path]:
    home = Path(os.environ["LEPTON_HOME"])
    yield home
    kill_leftovers(home)


def test_the_api_refuses_a_full_queue_with_429(
    platform_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("LEPTON_MAX_QUEUED_JOBS_PER_USER", "2")
    monkeypatch.setenv("LEPTON_MAX_QUEUED_JOBS", "3")
    server = start_platform(platform_home, tmp_path)
    job = {"spec": {"kind": "evaluate", "model_ref": "m", "data": "iris"}}
    try:
        with server.client() as admin:
            # a job that holds every CPU of the server: the jobs after it stay queued
            train = {"kind": "train", "model": "mlp", "epochs": 1000, "limit": 64, "val": "none"}
            blocker = ok(
                admin.post(
                    "/api/v1/jobs", json={"spec": train, "cpus": float(os.cpu_count() or 1)}
                ),
                201,
            )
            deadline = time.monotonic() + 60
            while ok(admin.get(f"/api/v1/jobs/{blocker['id']}"))["state"] != "running":
                assert time.monotonic() < deadline, "the blocking job never started"
                time.sleep(0.1)
            tokens = {}
            for name in ("dana", "erin"):
                user = ok(admin.post("/api/v1/users", json={"name": name, "role": "editor"}), 201)
                made = admin.post(f"/api/v1/users/{user['id']}/tokens", json={"name": "t"})
                tokens[name] = ok(made, 201)["secret"]
        with server.client(tokens["dana"]) as dana, server.client(tokens["erin"]) as erin:
            queued = [ok(dana.post("/api/v1/jobs", json=job), 201) for _ in range(2)]
            answer = dana.post("/api/v1/jobs", json=job)
            assert answer.status_code == 429, answer.text
            assert int(answer.headers["Retry-After"]) >= 1
            error = answer.json()["error"]
            assert error["code"] == "quota_exceeded"
            assert "dana already has 2 jobs queued" in error["message"]
            assert "wait for some to start, or cancel queued jobs" in error["message"]

            ok(erin.post("/api/v1/jobs", json=job), 201)  # dana's bound is not erin's
            answer = erin.post("/api/v1/jobs", json=job)
            assert answer.status_code == 429, answer.text
            assert "the server already has 3 jobs queued" in answer.json()["error"]["message"]
            assert ok(dana.get("/api/v1/jobs", params={"state": "queued"}))["total"] == 3

            ok(dana.post(f"/api/v1/jobs/{queued[0]['id']}/cancel"))
            ok(dana.post("/api/v1/jobs", json=job), 201)  # room again
        with server.client() as admin:
            ok(admin.post(f"/api/v1/jobs/{blocker['id']}/cancel"))
    finally:
        stop_platform(server, platform_home)
