"""The training recipe on real (small) data: it trains, tests, saves and registers as
one tracked run, and `lepton train`, the job spec and the dashboard form share its
defaults."""

from __future__ import annotations

import inspect
import json
import threading
from pathlib import Path
from typing import Any

import pytest
import torch

import lepton as lp
from lepton import _context
from lepton.cli._train import train as train_command
from lepton.errors import ConfigError
from lepton.platform.jobs._specs import TrainJob
from lepton.platform.web._jobs import _defaults as form_defaults
from lepton.registry import register
from lepton.storage import LocalArtifactStore, artifact_store, use_artifact_store
from lepton.tracking import get_run, start_run
from lepton.train import EpochRecord
from lepton.train.recipe import TrainConfig, run


def test_the_recipe_trains_tests_saves_and_registers_as_one_run(tmp_path: Path) -> None:
    config = TrainConfig(model="mlp", data="digits", epochs=3, seed=1, register="digits-mlp")
    epochs: list[EpochRecord] = []
    lines: list[str] = []
    outcome = run(
        config,
        registrar=register,
        save_to=tmp_path / "out",
        on_epoch=epochs.append,
        say=lines.append,
        quiet=True,
    )
    assert outcome.metrics["accuracy"] > 0.85
    assert [e.epoch for e in epochs] == [1, 2, 3]
    assert len(outcome.fit.history) == 3
    assert outcome.resumed_from_epoch == 0
    full = lp.data.load("digits", split="train")
    rows = len(full) - len(full.split(test_size=1 / 12, seed=0)[1])  # less the holdout
    assert len(outcome.train_data) == rows
    assert lines[0] == f"train mlp on digits: {rows} samples, 3 epochs"
    assert lines[-1] == "registered as digits-mlp:1"

    assert outcome.run_id is not None
    tracked = get_run(outcome.run_id)
    assert (tracked.name, tracked.state) == ("mlp-digits", "finished")
    assert tracked.params["fit"]["epochs"] == 3
    assert tracked.metrics["test_accuracy"] == pytest.approx(outcome.metrics["accuracy"])

    assert outcome.registered == "digits-mlp:1"
    version = lp.registry.resolve("digits-mlp:1")
    assert version.run_id == outcome.run_id, "the version's lineage names the run"
    assert version.metrics == pytest.approx(outcome.metrics)
    x = outcome.test_data.features[:32].float()
    with torch.no_grad():
        assert torch.equal(lp.load_model("digits-mlp:1")(x), outcome.model.eval()(x))

    assert outcome.saved == tmp_path / "out"
    manifest = json.loads((outcome.saved / "manifest.json").read_text())
    assert manifest["model"]["name"] == "mlp"
    assert manifest["metrics"] == pytest.approx(outcome.metrics)
    dataset = json.loads((outcome.saved / "dataset.json").read_text())
    assert (dataset["name"], dataset["rows"], dataset["input_shape"]) == ("digits", rows, [1, 8, 8])


def test_a_resumed_run_continues_from_the_checkpoint(tmp_path: Path) -> None:
    ckpt = tmp_path / "ckpt"
    first = TrainConfig(model="mlp", data="iris", epochs=2, val="none")
    run(first, checkpoint_dir=ckpt, track=False, quiet=True)
    lines: list[str] = []
    more = first.model_copy(update={"epochs": 4})
    resumed = run(more, checkpoint_dir=ckpt, resume=True, track=False, quiet=True, say=lines.append)
    assert resumed.resumed_from_epoch == 2
    assert "resuming from the checkpoint of epoch 2" in lines
    straight = run(more, track=False, quiet=True)
    assert resumed.metrics == straight.metrics, "resuming gives the uninterrupted result"
    assert len(resumed.fit.history) == 4


def test_limit_cuts_the_training_data_and_nothing_needs_a_run() -> None:
    outcome = run(TrainConfig(model="mlp", data="iris", epochs=1, limit=60, val="none"),
                  track=False, quiet=True)  # fmt: skip
    assert len(outcome.train_data) == 60
    assert outcome.run_id is None
    assert outcome.registered is None


def test_mistakes_are_refused_before_any_training(tmp_path: Path) -> None:
    unregistered = TrainConfig(model="mlp", data="iris", register="iris-mlp")
    with pytest.raises(ConfigError, match=r"needs a registrar: pass registrar=lepton\.registry"):
        run(unregistered)
    taken = tmp_path / "taken"
    taken.mkdir()
    with pytest.raises(ConfigError, match="already exists; save to a new folder"):
        run(TrainConfig(model="mlp", data="iris"), save_to=taken)
    assert lp.tracking.list_runs() == [], "no run was started for either"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"epochs": 0}, "epochs: Input should be greater than or equal to 1"),
        ({"model": "convnett"}, "unknown model 'convnett'; use one of"),
        ({"data": "mnistt"}, "unknown dataset 'mnistt'; use one of"),
        ({"optimizer": "lion"}, "optimizer: Input should be 'adamw'"),
        ({"model": "mlp", "config": {"num_filters": [8]}}, "are not arguments of 'mlp'"),
        ({"device": "tpu"}, "device: String should match pattern"),
        ({"lr": "0.1"}, "lr: Input should be a valid number"),
    ],
)
def test_checked_configs_raise_one_config_error_naming_the_field(
    values: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        TrainConfig.checked(**values)


def test_dataset_names_are_spelled_as_the_catalog_does() -> None:
    assert TrainConfig.checked(data="Fashion_MNIST").data == "fashion-mnist"


# -- one set of defaults -------------------------------------------------------------------
_SHARED = [name for name in TrainConfig.model_fields]


def test_the_job_spec_is_the_config_plus_its_kind() -> None:
    job, config = TrainJob(), TrainConfig()
    assert set(TrainJob.model_fields) == set(_SHARED) | {"kind"}
    for name in _SHARED:
        assert getattr(job, name) == getattr(config, name), name
        assert TrainJob.model_fields[name].annotation == TrainConfig.model_fields[name].annotation


def test_the_cli_options_default_to_the_config() -> None:
    options = inspect.signature(train_command).parameters
    wire = {"register": "register_as"}  # the CLI's and the JSON's name of the field
    compared = 0
    for option, param in options.items():
        name = wire.get(option, option)
        if name in TrainConfig.model_fields and name != "config":  # --config is key=value
            assert param.default.default == getattr(TrainConfig(), name), option
            compared += 1
    assert compared == len(_SHARED) - 1, "every field but the model arguments is an option"


def test_lepton_jobs_train_defaults_to_the_config_and_the_job_request() -> None:
    from lepton.cli._jobs import submit_train
    from lepton.platform.jobs._specs import JobRequest

    compared = 0
    for option, param in inspect.signature(submit_train).parameters.items():
        name = {"register": "register_as"}.get(option, option)
        if name in TrainConfig.model_fields:
            assert param.default.default == getattr(TrainConfig(), name), option
            compared += 1
        elif name in JobRequest.model_fields:
            assert param.default.default == JobRequest.model_fields[name].default, option
            compared += 1
    assert compared >= 10, "the job command's train and slot options are all compared"


def test_the_dashboard_form_starts_from_the_config() -> None:
    form, config = form_defaults(), TrainConfig()
    for name in ("model", "data", "epochs", "batch_size", "lr"):
        assert form[name] == str(getattr(config, name)), name


# -- plumbing the recipe stands on ----------------------------------------------------------
def test_a_started_run_is_the_active_one_in_its_own_context_only() -> None:
    assert _context.active_run() is None
    seen_by_thread: list[object] = []
    with start_run("ctx") as tracked:
        assert _context.active_run() is tracked
        thread = threading.Thread(target=lambda: seen_by_thread.append(_context.active_run()))
        thread.start()
        thread.join()
    assert seen_by_thread == [None], "another thread has its own context"
    assert _context.active_run() is None


def test_an_injected_artifact_store_receives_the_registered_model(tmp_path: Path) -> None:
    default = artifact_store()
    mine = LocalArtifactStore(tmp_path / "store")
    config = TrainConfig(model="mlp", data="iris", epochs=1, register="iris-mlp")
    with use_artifact_store(mine) as store:
        assert artifact_store() is store
        run(config, registrar=register, track=False, quiet=True)
        with pytest.raises(lp.errors.ArtifactNotFoundError):
            default.get("models/iris-mlp/1/manifest.json")
        loaded = lp.load_model("iris-mlp:1")  # read back from the same store
    assert artifact_store() is default, "the previous store is back after the block"
    assert [a.key for a in mine.list("models/iris-mlp/1/")] == [
        "models/iris-mlp/1/MODEL_CARD.md",
        "models/iris-mlp/1/manifest.json",
        "models/iris-mlp/1/model.safetensors",
    ]
    assert isinstance(loaded, torch.nn.Module)
