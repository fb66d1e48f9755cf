"""The worker of one job attempt: ``python -m lepton.platform.jobs._worker JOB_ID``.

The scheduler starts it with the job id as its only argument; the spec is read from the
database, never from the command line. Everything it prints is the job's live log. Its
last act is ``result.json`` in the job's folder (written atomically), then its exit code:

* ``0``: done, ``result.json`` holds ``{"ok": true, ...}`` (metrics, run id, output);
* ``3``: a :class:`~lepton.errors.LeptonError` (bad config, unknown model ref, wrong
  data): deterministic, so the scheduler does not retry it;
* ``1``: any other exception (retried, like a crash);
* ``143``: stopped by SIGTERM (a cancel); a train job's last epoch checkpoint remains.

A train job checkpoints every epoch into ``checkpoints/`` and resumes from the newest
one, so a retry after a crash continues where the killed attempt stopped.
"""

from __future__ import annotations

import json
import math
import shutil
import signal
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

import torch
from pydantic import BaseModel, TypeAdapter, ValidationError

from lepton import compress
from lepton._fs import atomic_write_bytes
from lepton.config import get_settings
from lepton.data import apply_preprocessing
from lepton.errors import JobError, LeptonError
from lepton.federated import RoundRecord
from lepton.federated import recipe as federated_recipe
from lepton.graph import recipe as graph_recipe
from lepton.platform.jobs._specs import (
    DETERMINISTIC_EXIT,
    ClassifyJob,
    CompressJob,
    DetectJob,
    EvaluateJob,
    FederatedJob,
    GenerateJob,
    GraphJob,
    JobSpec,
    RecommendJob,
    TextJob,
    TrainJob,
    TuneJob,
)
from lepton.recommend import recipe as recommend_recipe
from lepton.registry import load_model, register, resolve
from lepton.storage import Database, open_database
from lepton.storage.schema import JobRow
from lepton.text import recipe as text_recipe
from lepton.tracking import start_run
from lepton.train import evaluate, recipe, resolve_device
from lepton.train._progress import format_metrics
from lepton.tune import TuneResult
from lepton.tune import recipe as tune_recipe
from lepton.vision import recipe as vision_recipe

__all__ = ["main"]

TERMINATED_EXIT = 128 + signal.SIGTERM


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread so ``finally`` blocks run and the tracking run
    ends as ``killed``."""


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM ends it outright
    raise _Terminated()


def _say(text: str) -> None:
    print(f"[job] {text}", flush=True)


def _write_result(workdir: Path, result: dict[str, Any]) -> None:
    atomic_write_bytes(workdir / "result.json", json.dumps(result, indent=1).encode())


Spec = (
    TrainJob
    | EvaluateJob
    | TuneJob
    | CompressJob
    | FederatedJob
    | RecommendJob
    | GraphJob
    | DetectJob
    | TextJob
    | ClassifyJob
    | GenerateJob
)


def _load(db: Database, job_id: int) -> tuple[Spec, float]:
    with db.session() as s:
        row = s.get(JobRow, job_id)
        if row is None:
            raise JobError(
                f"no job {job_id} in {db.engine_url_text()}; jobs run through the server"
            )
        raw, cpus = dict(row.spec), row.cpus
    try:
        spec: Spec = TypeAdapter(JobSpec).validate_python(raw)
    except ValidationError as exc:
        raise JobError(f"the spec of job {job_id} is invalid: {exc}") from None
    return spec, cpus


def _record_run(db: Database, job_id: int, run_id: int) -> None:
    """Show the tracking run on the job while it runs (live metrics)."""
    with db.session() as s:
        row = s.get(JobRow, job_id)
        if row is not None:
            row.run_id = run_id


def _train(
    db: Database, job_id: int, spec: recipe.TrainConfig, workdir: Path,
    runner: Callable[..., recipe.TrainOutcome] = recipe.run,
) -> dict[str, Any]:  # fmt: skip
    out = workdir / "output"
    if out.exists():  # saved by an attempt that died before its result.json
        shutil.rmtree(out)
    outcome = runner(
        spec,
        registrar=register,
        save_to=out,
        checkpoint_dir=workdir / "checkpoints",
        resume=True,  # a retry continues from the last epoch the killed attempt finished
        run_name=f"job-{job_id}-{spec.model}-{spec.data}",
        tags={"job": job_id},
        database=db,
        on_start=lambda run: _record_run(db, job_id, run.id),
        say=_say,
    )
    fit_info = {k: v for k, v in outcome.fit.to_dict().items() if k != "checkpoint"}
    return {
        "kind": "train", "metrics": outcome.metrics, "fit": fit_info,
        "epochs": len(outcome.fit.history), "resumed_from_epoch": outcome.resumed_from_epoch,
        "run_id": outcome.run_id, "output": "output", "registered": outcome.registered,
    }  # fmt: skip


def _evaluate(db: Database, job_id: int, spec: EvaluateJob) -> dict[str, Any]:
    version = resolve(spec.model_ref, database=db)
    model = load_model(version.ref, database=db).to(resolve_device("auto"))
    ds = recipe.load_data(spec.data, spec.split, spec.limit)
    steps = version.manifest.get("preprocessing") or []
    if steps and not ds.preprocessing:  # the treatment the training data had
        ds = apply_preprocessing(ds, steps)
    shape = (version.manifest.get("input_schema") or {}).get("shape")
    if shape is not None and list(shape) != list(ds.input_shape):
        raise JobError(
            f"{version.ref} takes inputs of shape {tuple(shape)} but {spec.data!r} has "
            f"{ds.input_shape}; evaluate it on data like the data it was trained on"
        )
    _say(f"evaluate {version.ref} on {spec.data} ({spec.split}, {len(ds)} samples)")
    with start_run(
        f"job-{job_id}-evaluate-{version.name}", tags={"job": job_id}, database=db
    ) as run:
        _record_run(db, job_id, run.id)
        metrics = evaluate(model, ds)
        run.log_metrics({f"test_{k}": v for k, v in metrics.items()}, step=0)
    _say(format_metrics(metrics))
    return {
        "kind": "evaluate", "metrics": metrics, "model_ref": version.ref, "data": spec.data,
        "split": spec.split, "rows": len(ds), "run_id": run.id,
    }  # fmt: skip


def _tune(db: Database, job_id: int, spec: TuneJob) -> dict[str, Any]:
    study = spec.study or f"job-{job_id}"  # a retry resumes the crashed attempt's study
    told: set[int] = set()

    def progress(so_far: TuneResult) -> None:
        if not told:  # the study's run, on the job as soon as it exists
            _record_run(db, job_id, so_far.run_id)
        best = f"{so_far.best_value:.4f}" if so_far.best_value is not None else "-"
        for t in so_far.trials:  # parallel workers finish trials in any order
            if t.state == "running" or t.number in told:
                continue
            told.add(t.number)
            value = f" {so_far.metric}={t.value:.4f}" if t.value is not None else ""
            _say(
                f"trial {t.number} {t.state}{value} · best {best} · {len(told)}/{spec.n_trials} "
                f"trials, {so_far.count('pruned')} pruned"
            )

    result = tune_recipe.run(spec, study=study, database=db, on_trial=progress, say=_say)
    _say(result.summary())
    _record_run(db, job_id, result.run_id)
    return {
        "kind": "tune", "study": result.study, "metric": result.metric,
        "best_value": result.best_value, "best_params": result.best_params,
        "best_trial": result.best_trial, "trials": len(result.trials),
        "complete": result.count("complete"), "pruned": result.count("pruned"),
        "failed": result.count("fail"), "epochs_trained": result.epochs_trained,
        "importances": result.importances, "run_id": result.run_id,
        "registered": result.registered,
    }  # fmt: skip


def _compress(db: Database, job_id: int, spec: CompressJob) -> dict[str, Any]:
    config = compress.CompressConfig.model_validate(spec.model_dump(exclude={"kind"}))
    with start_run(f"job-{job_id}-compress-{spec.model}", tags={"job": job_id}, database=db) as run:
        _record_run(db, job_id, run.id)
        run.log_params(config.model_dump(mode="json", by_alias=True))
        outcome = compress.run(config, database=db, say=_say)
        report = outcome.report
        figures = {"size_before": report.size_before, "size_after": report.size_after,
                   "smaller": report.ratio}  # fmt: skip
        if report.accuracy_before is not None and report.accuracy_after is not None:
            figures |= {"test_accuracy_before": report.accuracy_before,
                        "test_accuracy": report.accuracy_after}  # fmt: skip
        run.log_metrics(figures, step=0)
    return {
        "kind": "compress", "source": report.source, "registered": outcome.registered,
        "format": report.kind, "metrics": figures, "steps": [s.to_dict() for s in outcome.steps],
        "run_id": run.id,
    }  # fmt: skip


def _federated(db: Database, job_id: int, spec: FederatedJob) -> dict[str, Any]:
    config = federated_recipe.FederatedConfig.model_validate(spec.model_dump(exclude={"kind"}))

    def each(record: RoundRecord) -> None:
        accuracy = f"{record.accuracy:.4f}" if record.accuracy is not None else "-"
        _say(f"round {record.round}/{config.rounds}: accuracy {accuracy} loss "
             f"{record.loss:.4f} · {record.clients_replied}/{record.clients_sampled} clients "
             f"replied, {record.clients_failed} failed")  # fmt: skip

    result = federated_recipe.run(
        config, registrar=register, database=db, on_round=each, say=_say,
        run_name=f"job-{job_id}-federated-{spec.model}-{spec.data}",
    )  # fmt: skip
    if result.run_id is not None:
        _record_run(db, job_id, result.run_id)
    final = result.rounds[-1]
    return {
        "kind": "federated", "metrics": {"accuracy": final.accuracy, "loss": final.loss},
        "rounds": [r.to_json() for r in result.rounds], "seconds": result.seconds,
        "mode": result.mode, "strategy": result.strategy, "run_id": result.run_id,
        "registered": result.extra.get("registered"),
    }  # fmt: skip


def _recommend(db: Database, job_id: int, spec: RecommendJob) -> dict[str, Any]:
    config = recommend_recipe.RecommendConfig.model_validate(spec.model_dump(exclude={"kind"}))
    result = recommend_recipe.run(
        config, registrar=register, database=db, say=_say, tags={"job": job_id},
        run_name=f"job-{job_id}-recommend-{spec.data}-{spec.feedback}",
        on_run=lambda run_id: _record_run(db, job_id, run_id),
    )  # fmt: skip
    return {"kind": "recommend", **result.to_json()}


def _recipe(
    db: Database, job_id: int, spec: Spec, cpus: float, config_cls: type[BaseModel],
    runner: Callable[..., Any], run_name: str, **options: Any,
) -> dict[str, Any]:  # fmt: skip
    """Run a recipe whose ``run(config, ...)`` takes the worker's database, log, tags, run
    name and threads and whose result has ``to_json()`` (graph, detect, generate, text)."""
    config = config_cls.model_validate(spec.model_dump(exclude={"kind"}, by_alias=True))
    result = runner(
        config, database=db, say=_say, tags={"job": job_id}, run_name=f"job-{job_id}-{run_name}",
        on_run=lambda run_id: _record_run(db, job_id, run_id),
        num_threads=max(1, math.ceil(cpus)), **options,
    )  # fmt: skip
    return {"kind": spec.kind, **result.to_json()}


def _classify(db: Database, job_id: int, spec: ClassifyJob, workdir: Path) -> dict[str, Any]:
    """A train job with the vision recipe's augmentation (``train``'s checkpoints, resume,
    output folder and result)."""
    config = vision_recipe.ClassifyConfig.model_validate(
        spec.model_dump(exclude={"kind"}, by_alias=True)
    )
    return {**_train(db, job_id, config, workdir, vision_recipe.classify), "kind": "classify"}


def main(argv: Sequence[str] | None = None) -> int:
    """Run one attempt of a job; returns the exit code (see the module docstring)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1 or not args[0].isdigit():
        print("usage: python -m lepton.platform.jobs._worker JOB_ID (the server starts it)")
        return 2
    job_id = int(args[0])
    signal.signal(signal.SIGTERM, _on_sigterm)
    workdir = get_settings().home / "jobs" / str(job_id)
    try:
        db = open_database()
        spec, cpus = _load(db, job_id)
        torch.set_num_threads(max(1, math.ceil(cpus)))
        if isinstance(spec, TrainJob):
            outcome = _train(db, job_id, spec, workdir)
        elif isinstance(spec, TuneJob):
            outcome = _tune(db, job_id, spec)
        elif isinstance(spec, CompressJob):
            outcome = _compress(db, job_id, spec)
        elif isinstance(spec, FederatedJob):
            outcome = _federated(db, job_id, spec)
        elif isinstance(spec, RecommendJob):
            outcome = _recommend(db, job_id, spec)
        elif isinstance(spec, GraphJob):
            outcome = _recipe(db, job_id, spec, cpus, graph_recipe.GraphConfig, graph_recipe.run,
                              f"graph-{spec.dataset}-{spec.model}", registrar=register)  # fmt: skip
        elif isinstance(spec, TextJob):
            outcome = _recipe(db, job_id, spec, cpus, text_recipe.TextConfig, text_recipe.run,
                              f"text-{spec.task}")  # fmt: skip
        elif isinstance(spec, ClassifyJob):
            outcome = _classify(db, job_id, spec, workdir)
        elif isinstance(spec, DetectJob):
            outcome = _recipe(db, job_id, spec, cpus, vision_recipe.DetectConfig,
                              vision_recipe.run, f"detect-{spec.dataset}",
                              registrar=register)  # fmt: skip
        elif isinstance(spec, GenerateJob):
            outcome = _recipe(db, job_id, spec, cpus, vision_recipe.GenerateConfig,
                              vision_recipe.generate, f"generate-{spec.dataset}-{spec.model}",
                              registrar=register)  # fmt: skip
        else:
            outcome = _evaluate(db, job_id, spec)
        _write_result(workdir, {"ok": True, **outcome})
    except _Terminated:
        _say("stopped by SIGTERM")
        return TERMINATED_EXIT
    except LeptonError as exc:
        _say(f"error ({exc.code}): {exc.message}")
        _write_result(
            workdir, {"ok": False, "deterministic": True, "code": exc.code, "error": exc.message}
        )
        return DETERMINISTIC_EXIT
    except Exception as exc:
        traceback.print_exc()
        error = f"{type(exc).__name__}: {exc}"
        _write_result(workdir, {"ok": False, "deterministic": False, "error": error[:2000]})
        return 1
    _say("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
