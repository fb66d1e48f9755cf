"""``lepton vision train`` (``lepton train``'s options plus augmentation) and ``lepton
vision generate train|sample`` here, on real scikit-learn digits and MNIST images: the
results they print are the ones the registry and the tracking store keep, and the
generate recipe's spec is its job kind's. The ``--submit`` paths run against a real
server in ``tests/integration/test_vision_jobs.py``."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pydantic import TypeAdapter, ValidationError
from typer.testing import CliRunner

import lepton as lp
from lepton.cli import app
from lepton.errors import ConfigError, RequestError
from lepton.platform.jobs._specs import GenerateJob, JobSpec
from lepton.vision.recipe import GenerateConfig, generate


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("LEPTON_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("COLUMNS", "200")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield tmp_path / "home"
    torch.set_num_threads(before)


def test_the_generate_spec_is_the_config_plus_its_kind() -> None:
    assert GenerateJob().model_dump(exclude={"kind"}) == GenerateConfig().model_dump()
    spec = TypeAdapter(JobSpec).validate_python(
        {"kind": "generate", "dataset": "fashion-mnist", "epochs": 3, "register": "gen"}
    )
    assert isinstance(spec, GenerateJob)
    assert (spec.dataset, spec.epochs, spec.register_as, spec.model) == (
        "fashion-mnist", 3, "gen", "vae",
    )  # fmt: skip
    stored = spec.model_dump(mode="json", by_alias=True)
    assert TypeAdapter(JobSpec).validate_python(stored) == spec
    for bad, field in (({"model": "gan"}, "model"), ({"rows": 10}, "rows"),
                       ({"register": "Bad Name!"}, "register"), ({"samples": 9000}, "samples"),
                       ({"dataset": "/etc/passwd"}, "dataset")):  # fmt: skip
        with pytest.raises(ValidationError, match=field):
            GenerateJob.model_validate({"kind": "generate", **bad})
    with pytest.raises(ConfigError, match="registrar"):
        generate(GenerateConfig.checked(register="gen"))


@pytest.mark.slow  # real digits: a few seconds of training
def test_vision_train_runs_the_train_options_with_augmentation(home: Path) -> None:
    runner = CliRunner()
    args = ["vision", "train", "-m", "mlp", "-d", "digits", "--epochs", "2", "--val", "none",
            "--padding", "1", "--erasing", "0.25", "--label-smoothing", "0.1", "--tta",
            "--register", "digits-aug", "--json"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    metrics = summary["test"]
    assert 0.5 < metrics["accuracy"] <= 1, metrics  # 10% is chance
    assert 0.5 < metrics["tta_accuracy"] <= 1, metrics
    assert summary["registered"] == "digits-aug:1"
    run = lp.tracking.get_run(summary["run"])
    assert run.params["recipe"]["padding"] == 1  # the whole recipe, augmentation included
    assert run.params["recipe"]["label_smoothing"] == 0.1
    assert run.metrics["test_tta_accuracy"] == pytest.approx(metrics["tta_accuracy"])
    model = lp.load_model("digits-aug:1")
    test = lp.data.load("digits", split="test")
    assert lp.evaluate(model, test)["accuracy"] == pytest.approx(metrics["accuracy"], abs=1e-6)
    # the table prints the TTA accuracy as a percentage, like the accuracy
    shown = runner.invoke(app, [*args[:-3], "--epochs", "1", "--no-track"])
    assert shown.exit_code == 0, shown.output
    row = next(line for line in shown.output.splitlines() if "tta_accuracy" in line)
    assert re.search(r"tta_accuracy\s*│\s*\d+\.\d\d%", row), row

    refused = runner.invoke(app, [*args[:-1], "--submit", "--save", str(home / "out")])
    assert isinstance(refused.exception, ConfigError)
    assert "leave them out with --submit" in refused.exception.message
    wrong = runner.invoke(app, ["vision", "train", "--erasing", "2"])
    assert isinstance(wrong.exception, ConfigError)
    assert "erasing" in wrong.exception.message


@pytest.mark.slow  # a small VAE and its judge on 300 MNIST images: ~20 s
def test_generate_train_judges_registers_and_sample_draws_the_same_images(
    home: Path, tmp_path: Path
) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["vision", "generate", "train", "--rows", "300", "--epochs", "2",
                                 "--samples", "100", "--judge-epochs", "8", "--register",
                                 "gen", "--json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    made = json.loads(result.output)
    assert (made["registered"], made["rows"], len(made["losses"])) == ("gen:1", 300, 2)
    metrics = made["metrics"]
    assert 0 <= metrics["label_accuracy"] <= 1
    assert metrics["frechet_floor"] < metrics["frechet_distance"]  # 2 epochs on 300 images
    assert metrics["real_label_accuracy"] > 0.5  # the judge learnt something
    tracked = lp.tracking.get_run(made["run_id"])
    assert tracked.metrics["label_accuracy"] == pytest.approx(metrics["label_accuracy"])
    assert tracked.params["rows"] == 300

    out = tmp_path / "sevens.png"
    drawn = runner.invoke(app, ["vision", "generate", "sample", "--model", "gen", "--label",
                                "7", "-n", "5", "--seed", "4", "--out", str(out)])  # fmt: skip
    assert drawn.exit_code == 0, drawn.output
    assert "5 images of 7 from gen:1" in drawn.output
    grid = np.asarray(Image.open(io.BytesIO(out.read_bytes())))
    assert grid.shape == (28, 5 * 28)
    same = lp.vision.Generator.load("gen:1").sample(5, label=7, seed=4)
    expected = np.concatenate([im[0].numpy() for im in same], axis=1)
    assert (grid == expected).all()
    unknown = runner.invoke(app, ["vision", "generate", "sample", "--model", "gen",
                                  "--label", "cat"])  # fmt: skip
    assert isinstance(unknown.exception, RequestError)
    assert "unknown label" in unknown.exception.message
    neither = runner.invoke(app, ["vision", "generate", "sample"])
    assert isinstance(neither.exception, ConfigError)
    assert "exactly one of --model REF or --url URL" in neither.exception.message


@pytest.mark.slow  # a small VAE and its judge on 300 MNIST images
def test_the_gallery_lists_a_generate_runs_figures(home: Path) -> None:
    from fastapi.testclient import TestClient

    from lepton.config import get_settings
    from lepton.platform._app import Platform, ServerConfig, create_app
    from lepton.registry import register
    from lepton.storage import open_database

    made = generate(GenerateConfig.checked(rows=300, epochs=1, samples=100, judge_epochs=2,
                                           register="listed-gen"), registrar=register)  # fmt: skip
    platform = Platform(open_database(), get_settings().home, ServerConfig(manage=False))
    platform.auth.bootstrap(get_settings().home)
    client = TestClient(create_app(platform), base_url="http://127.0.0.1:8000")
    link = platform.auth.login_link_secret(platform.auth.admin_id())
    client.get(f"/login?token={link}", follow_redirects=False)
    page = client.get("/gallery").text
    table = page.split('id="generators"')[1].split("</table>")[0]
    assert "listed-gen:1" in table
    assert "image-vae" in table
    assert f"{100 * made.metrics['label_accuracy']:.1f}%" in table
    assert f"{100 * made.metrics['real_label_accuracy']:.1f}%" in table
