"""Settings come from LEPTON_* variables; bad values give a ConfigError that names them."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import lepton as lp
from lepton.config import get_settings
from lepton.errors import ConfigError


def test_settings_follow_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LEPTON_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("LEPTON_DATA_DIR", "~/datasets")
    settings = get_settings()
    assert settings.home == tmp_path / "home"
    assert settings.data_dir == Path.home() / "datasets"
    assert settings.checkpoints_dir == tmp_path / "home" / "checkpoints"


def test_bad_setting_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEPTON_NUM_THREADS", "many")
    with pytest.raises(
        ConfigError, match=r"LEPTON_NUM_THREADS: Input should be a valid integer.*fix or unset them"
    ):
        get_settings()


def test_num_threads_setting_applies_during_fit(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[int] = []

    class Threads(lp.Callback):
        def on_epoch_start(self, state: lp.train.TrainState) -> None:
            seen.append(torch.get_num_threads())

    before = torch.get_num_threads()
    monkeypatch.setenv("LEPTON_NUM_THREADS", "1")
    train = lp.data.load("iris", split="train")
    lp.fit(
        lp.models.MLP(in_features=4, num_classes=3),
        train,
        epochs=1,
        callbacks=[Threads()],
        quiet=True,
    )
    assert seen == [1]
    assert torch.get_num_threads() == before


def test_lepton_artifacts_moves_the_local_store(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from lepton.storage import LocalArtifactStore, artifact_store

    monkeypatch.setenv("LEPTON_ARTIFACTS", str(tmp_path / "elsewhere"))
    store = artifact_store()
    assert isinstance(store, LocalArtifactStore)
    assert store.root == tmp_path / "elsewhere"
    store.put("runs/1/x", b"here")
    assert (tmp_path / "elsewhere" / "refs").is_dir()
