"""Tracking on a real database: runs, fit logging, states, crash reconciliation, artifacts."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import torch
from PIL import Image

import lepton as lp
from lepton.errors import TrackingError
from lepton.storage import Database, artifact_store
from lepton.tracking import (
    compare_runs,
    get_run,
    list_runs,
    metric_history,
    plot_curves,
)

pytestmark = pytest.mark.integration


def small_fit(epochs: int = 3, lr: float = 1e-3) -> lp.FitResult:
    torch.manual_seed(0)
    model = lp.models.MLP(in_features=4, num_classes=3, hidden=[16])
    train, test = lp.data.load("iris", split="train"), lp.data.load("iris", split="test")
    return lp.fit(model, train, test, epochs=epochs, lr=lr, quiet=True)


def test_fit_logs_into_the_active_run(database_url: str) -> None:
    db = Database(database_url)
    db.upgrade()
    with lp.start_run("iris-mlp", params={"note": "baseline"}, database=db) as run:
        assert lp.tracking.active_run() is run
        assert run is not None
        result = small_fit(epochs=3)
    assert lp.tracking.active_run() is None
    record = get_run(run.id, database=db)
    assert record.state == "finished"
    assert record.ended_at is not None
    assert record.params["note"] == "baseline"
    assert record.params["fit"]["epochs"] == 3
    assert record.params["model_spec"]["name"] == "mlp"
    train = lp.data.load("iris", split="train")
    assert record.params["dataset.train"]["fingerprint"] == train.fingerprint()
    assert record.system["torch"] == torch.__version__
    history = metric_history(run.id, "val_loss", database=db)
    assert [step for step, _ in history] == [1, 2, 3]
    assert [value for _, value in history] == pytest.approx([r.val["loss"] for r in result.history])
    assert record.metrics["val_accuracy"] == pytest.approx(result.history[-1].val["accuracy"])
    db.dispose()


def test_failures_and_interrupts_are_recorded() -> None:
    with pytest.raises(ZeroDivisionError, match="division by zero"), lp.start_run("bad") as run:  # noqa: PT012
        run.log_metric("x", 1.0)
        _ = 1 / 0
    record = get_run(run.id)
    assert record.state == "failed"
    assert "ZeroDivisionError" in record.tags["lepton.error"]
    with (
        pytest.raises(KeyboardInterrupt, match="stopped by the user"),
        lp.start_run("stopped") as stopped,
    ):
        raise KeyboardInterrupt("stopped by the user")
    assert get_run(stopped.id).state == "killed"
    with pytest.raises(TrackingError, match=r"run [0-9]+ is failed; start a new run to log more"):
        run.log_metric("x", 2.0)


def test_killed_process_leaves_a_failed_run_not_a_running_one(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import os, signal
        import lepton as lp
        run = lp.start_run("doomed")
        run.log_metric("loss", 0.5)
        print(run.id, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=dict(os.environ), timeout=120)  # fmt: skip
    assert proc.returncode == -9
    run_id = int(proc.stdout.strip())
    record = get_run(run_id)
    assert record.state == "failed"
    assert "died" in record.tags["lepton.error"]
    assert record.metrics == {"loss": 0.5}
    assert [r.id for r in list_runs(state="running")] == []


def test_artifacts_compare_and_plot(tmp_path: Path) -> None:
    ids = []
    for lr in (1e-3, 1e-2):
        with lp.start_run(f"lr-{lr}", params={"lr": lr, "model": "mlp"}) as run:
            small_fit(epochs=4, lr=lr)
            report = tmp_path / "report.txt"
            report.write_text(f"lr={lr}")
            key = run.log_artifact(report)
            ids.append(run.id)
    assert artifact_store().get(key) == b"lr=0.01"
    table = compare_runs(ids)
    assert table["params"] == {"fit.lr": [1e-3, 1e-2], "lr": [1e-3, 1e-2]}  # what differs
    assert len(table["metrics"]["val_loss"]) == 2
    svg = plot_curves(
        [(f"run {i}", metric_history(i, "train_loss")) for i in ids],
        tmp_path / "loss.svg",
        title="train loss",
    )
    tree = ET.parse(svg)
    lines = tree.getroot().findall("{http://www.w3.org/2000/svg}polyline")
    assert len(lines) == 2
    assert all(len(line.get("points", "").split()) == 4 for line in lines)
    png = plot_curves(
        [(f"run {i}", metric_history(i, "train_loss")) for i in ids], tmp_path / "loss.png"
    )
    with Image.open(png) as image:
        assert image.size == (640, 360)
        counted = image.convert("RGB").getcolors(maxcolors=100_000)
        assert counted is not None
        colors = {rgb for _, rgb in counted}
    assert (0x25, 0x63, 0xEB) in colors  # first series' blue
    assert (0xDC, 0x26, 0x26) in colors  # second series' red
    with pytest.raises(TrackingError, match=r"\.svg or \.png"):
        plot_curves([("a", [(1, 1.0)])], tmp_path / "loss.jpg")
    assert [r.id for r in list_runs(limit=2)] == ids[::-1]
    with pytest.raises(TrackingError, match="lepton runs list"):
        get_run(99999)
