"""Shared fixtures: every test runs with its own LEPTON_HOME."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _lepton_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path_factory.mktemp("lepton-home")
    monkeypatch.setenv("LEPTON_HOME", str(home))
    monkeypatch.delenv("LEPTON_DATA_DIR", raising=False)
    return home
