"""Vision jobs through real processes.

* A ``detect`` job through a real scheduler: the real worker process makes digit scenes
  from MNIST, trains a tiny detector with ``lp.fit``, measures its COCO mAP on held-out
  scenes, logs the run and registers the detector, which then loads back through the
  registry and gives the job's own figures again.
* A registered detector deployed by a real ``lepton server``, its ``/detect`` forwarded by
  ``POST /api/v1/deployments/NAME/detect``.
* ``lepton vision train --submit`` and ``lepton vision generate train --submit`` run
  ``classify`` and ``generate`` jobs on a real server, and a deployed generator draws the
  registered version's images through ``lepton vision generate sample --url``."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from servers import ok, running, start_platform, stop_platform

import lepton as lp
from helpers import one_slot_jobs, wait_for_job
from lepton.platform.jobs._specs import TERMINAL, ClassifyJob, DetectJob, JobRequest
from lepton.serve._types import Image
from lepton.serve._vision import detect_image
from lepton.storage import Database
from lepton.tracking import get_run
from lepton.vision import Detector, digit_scenes
from lepton.vision.recipe import scene_options

pytestmark = pytest.mark.integration


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Iterator[Database]:
    database = Database(f"sqlite:///{tmp_path / 'jobs.db'}")
    database.upgrade()
    yield database
    database.dispose()


def _succeeded(db: Database, spec: DetectJob | ClassifyJob) -> tuple[Any, dict[str, Any], str]:
    """Run ``spec`` as a job through the real worker; its view, result and log once it
    has succeeded (the log is the failure message otherwise)."""
    manager = one_slot_jobs(db)
    job = manager.submit(JobRequest(spec=spec, memory_mb=4096), "alice")
    view = wait_for_job(manager, job.id, lambda v: v.state in TERMINAL)
    log = (manager.jobs_dir / str(job.id) / "log.txt").read_text()
    assert view.state == "succeeded", log
    assert view.result is not None
    return view, view.result, log


def test_a_detect_job_trains_measures_and_registers(sqlite_db: Database) -> None:
    spec = DetectJob.model_validate({
        "kind": "detect", "train_scenes": 48, "test_scenes": 16, "size": 32, "width": 8,
        "blocks": 0, "epochs": 1, "batch_size": 16, "register": "job-det",
    })  # fmt: skip
    view, result, log = _succeeded(sqlite_db, spec)
    assert (result["kind"], result["registered"], result["train_scenes"]) == (
        "detect", "job-det:1", 48,
    )  # fmt: skip
    assert result["test_scenes"] == 16
    assert len(result["losses"]) == 1
    assert re.search(r"epoch 1/1: loss \d+\.\d+", log)
    assert re.search(r"test \(16 images\): mAP@0\.5 \d\.\d{4}", log)
    assert "registered as job-det:1" in log
    metrics = result["metrics"]
    assert 0 <= metrics["map"] <= metrics["map_50"] <= 1
    tracked = get_run(view.run_id, database=sqlite_db)
    assert tracked.state == "finished"
    assert tracked.metrics["test_map_50"] == pytest.approx(metrics["map_50"])
    # the registered version is the detector the job measured: its mAP again, here
    det = lp.vision.Detector.load("job-det:1", database=sqlite_db)
    assert det.input_size == (32, 32)
    held_out = digit_scenes("test", n=16, seed=1, **scene_options(32))
    again = det.evaluate(held_out)
    assert again["map_50"] == pytest.approx(metrics["map_50"])
    assert again["map"] == pytest.approx(metrics["map"])


def test_a_classify_job_trains_a_resnet_with_augmentation_and_registers(
    sqlite_db: Database,
) -> None:
    """The ``classify`` kind through the real worker: a small ResNet on scikit-learn's real
    digits with crops, erasing and label smoothing, its test and TTA accuracy recorded,
    and the registered version giving the job's test accuracy again."""
    spec = ClassifyJob.model_validate({
        "kind": "classify", "model": "resnet", "config": {"widths": [8, 16], "blocks_per_stage": 1},
        "data": "digits", "epochs": 4, "batch_size": 32, "lr": 1e-2, "schedule": "onecycle",
        "padding": 1, "erasing": 0.25, "label_smoothing": 0.1, "tta": True,
        "register": "job-cls", "seed": 0,
    })  # fmt: skip
    view, result, _ = _succeeded(sqlite_db, spec)
    assert (result["kind"], result["registered"], result["epochs"]) == ("classify", "job-cls:1", 4)
    metrics = result["metrics"]
    assert metrics["accuracy"] > 0.85, metrics  # 94% when measured (10% is chance)
    assert 0.85 < metrics["tta_accuracy"] <= 1, metrics
    tracked = get_run(view.run_id, database=sqlite_db)
    assert tracked.metrics["test_accuracy"] == pytest.approx(metrics["accuracy"])
    model = lp.load_model("job-cls:1", database=sqlite_db)
    assert type(model).__name__ == "ResNet"
    test = lp.data.load("digits", split="test")
    assert lp.evaluate(model, test)["accuracy"] == pytest.approx(metrics["accuracy"], abs=1e-6)


def _ready(client: httpx.Client, name: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while True:
        found = ok(client.get(f"/api/v1/deployments/{name}"))
        if found["state"] == "ready":
            return
        assert found["state"] != "failed", found
        assert time.monotonic() < deadline, found
        time.sleep(0.2)


@pytest.mark.slow
def test_the_platform_forwards_detect_to_a_deployed_detector(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from PIL import Image as PILImage

    home = tmp_path / "home"
    monkeypatch.setenv("LEPTON_HOME", str(home))
    torch.manual_seed(0)
    scenes = digit_scenes("train", n=6, seed=0, size=32, digits=(2, 2), digit_size=(12, 20))
    det = Detector(width=16, blocks=1)  # the handful learnt by heart: it finds their digits
    det.fit(scenes, epochs=60, batch_size=6, lr=5e-3, schedule=None, num_threads=1)
    lp.register(det, "det")
    pil = PILImage.fromarray((scenes.images[0, 0] * 255).round().byte().numpy(), mode="L")
    buffer = io.BytesIO()
    pil.resize((80, 48)).save(buffer, format="PNG")
    png = buffer.getvalue()
    expected = detect_image(det, Image.from_bytes(png)).model_dump()
    assert (expected["width"], expected["height"], len(expected["boxes"])) == (80, 48, 2)
    server = start_platform(home, tmp_path)
    try:
        with server.client() as admin:
            ok(admin.post("/api/v1/deployments", json={"name": "det", "model": "det:1"}), 201)
            _ready(admin, "det")
            url = "/api/v1/deployments/det/detect"
            sent = ok(admin.post(url, json={"image": base64.b64encode(png).decode()}))
            raw = ok(admin.post(url, content=png, headers={"content-type": "image/png"}))
            fewer = ok(admin.post(url, json={"image": base64.b64encode(png).decode(),
                                             "max_detections": 1}))  # fmt: skip
        for answer in (sent, raw):
            assert answer["labels"] == expected["labels"]
            flat = [v for box in answer["boxes"] for v in box]
            assert flat == pytest.approx([v for box in expected["boxes"] for v in box], abs=0.02)
            assert answer["scores"] == pytest.approx(expected["scores"], abs=1e-5)
        assert fewer["boxes"] == sent["boxes"][:1]
        anonymous = httpx.post(f"{server.url}{url}", json={"image": "x"}, timeout=30)
        assert anonymous.status_code == 401
    finally:
        stop_platform(server, home)


LEPTON = str(Path(sys.executable).parent / "lepton")


@pytest.mark.slow
def test_the_cli_submits_classify_and_generate_jobs_and_samples_a_deployment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("LEPTON_HOME", str(home))
    server = start_platform(home, tmp_path)
    env = dict(os.environ, LEPTON_HOME=str(home), LEPTON_SERVER_URL=server.url,
               COLUMNS="200")  # fmt: skip

    def lepton(*args: str) -> str:
        proc = subprocess.run([LEPTON, *args], env=env, capture_output=True, text=True,
                              timeout=600, check=False)  # fmt: skip
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc.stdout

    try:
        # the classify job runs beside the generate one (two CPU slots): not followed
        queued = lepton("vision", "train", "-m", "mlp", "-d", "digits", "--epochs", "2",
                        "--padding", "1", "--label-smoothing", "0.1", "--tta",
                        "--register", "job-aug", "--submit")  # fmt: skip
        found = re.search(r"job (\d+) (queued|running)", queued)
        assert found, queued
        generated = lepton("vision", "generate", "train", "--rows", "300", "--epochs", "2",
                           "--samples", "100", "--judge-epochs", "4", "--register", "job-gen",
                           "--submit", "--follow")  # fmt: skip
        assert "epoch 2/2: loss" in generated
        assert re.search(r"samples recognised as the class asked for: \d+\.\d%", generated)
        assert "registered as job-gen:1" in generated
        assert "succeeded" in generated
        with server.client() as admin:
            deadline = time.monotonic() + 300
            while ok(admin.get(f"/api/v1/jobs/{found.group(1)}"))["state"] not in TERMINAL:
                assert time.monotonic() < deadline
                time.sleep(0.5)
            jobs = {j["kind"]: j for j in admin.get("/api/v1/jobs").json()["items"]}
            assert {j["state"] for j in jobs.values()} == {"succeeded"}
            assert set(jobs) == {"classify", "generate"}
            assert jobs["classify"]["spec"]["padding"] == 1
            assert jobs["classify"]["result"]["metrics"]["tta_accuracy"] > 0.5
            assert jobs["generate"]["spec"]["rows"] == 300
            figures = jobs["generate"]["result"]["metrics"]
            assert figures["frechet_floor"] < figures["frechet_distance"]
            for name in ("job-aug", "job-gen"):
                ok(admin.get(f"/api/v1/models/{name}/versions/1"))
    finally:
        stop_platform(server, home)
    expected = lp.vision.Generator.load("job-gen:1")
    with running("deploy", "job-gen:1", tmp=tmp_path, env={"LEPTON_HOME": str(home)}) as deployed:
        answer = json.loads(lepton("vision", "generate", "sample", "--url", deployed.url,
                                   "--label", "3", "-n", "4", "--json"))  # fmt: skip
    assert answer["labels"] == ["3"] * 4
    images = expected.sample(4, label=3, seed=0)
    png = lp.vision.to_png(images[0])
    assert base64.b64decode(answer["images"][0]) == png
